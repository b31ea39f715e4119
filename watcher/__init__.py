"""The change-stream watcher: events on support_messages and communications enqueue status jobs."""
