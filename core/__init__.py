"""The ground layer every other package stands on: settings, defaults, counters and logging."""
