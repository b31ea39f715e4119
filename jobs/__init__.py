"""The status job and the sweep (see issue: the status job)."""
