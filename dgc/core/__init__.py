"""The base layer: errors, safe files, progress, precision, processes, metrics and tables."""
