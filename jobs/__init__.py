"""The status job, the sweep and everything that puts them on the queue."""
