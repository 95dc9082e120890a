"""Figures and the Markdown report of a run."""
