"""The ground layer every other package stands on: settings, defaults, metrics and logging."""
