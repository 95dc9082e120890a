"""dgc: the Deep Generative Classifier (CVPR 2020) for class-imbalanced data, with baselines."""

from dgc.errors import DGCError

__all__ = ["DGCError"]
__version__ = "0.1.0"
