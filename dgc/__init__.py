"""dgc: the Deep Generative Classifier (CVPR 2020) for class-imbalanced data, with baselines."""

from __future__ import annotations

from typing import Any

from dgc.errors import DGCError

__all__ = ["DGCClassifier", "DGCError"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """`dgc.DGCClassifier` on first use, so `import dgc` stays free of torch and scikit-learn."""
    if name == "DGCClassifier":
        from dgc.estimator import DGCClassifier

        return DGCClassifier
    raise AttributeError(f"module 'dgc' has no attribute {name!r}")
