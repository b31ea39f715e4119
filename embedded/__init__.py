"""The embedded default: an in-memory MongoDB-compatible server and a real redis-server."""
