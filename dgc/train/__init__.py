"""Training: the epoch loop every method shares, DGC's steps and the baselines' steps."""
