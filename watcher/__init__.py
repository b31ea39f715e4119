"""The change-stream watcher (see issue: the watcher)."""
