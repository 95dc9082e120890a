"""Runs on disk: the run folder, training a run end to end, and using a finished one."""
