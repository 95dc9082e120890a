"""dgc: the Deep Generative Classifier (CVPR 2020) for class-imbalanced data, with baselines."""

from __future__ import annotations

import importlib
from typing import Any

from dgc.core.errors import DGCError

__all__ = ["DGCClassifier", "DGCError", "DGCSampler", "score_ood"]
_LAZY = {"DGCClassifier": "dgc.estimators.classifier", "DGCSampler": "dgc.estimators.sampler",
         "score_ood": "dgc.evaluation.ood"}
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """`dgc.DGCClassifier`, `dgc.DGCSampler` and `dgc.score_ood` on first use, so `import dgc`
    stays free of torch and scikit-learn."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dgc' has no attribute {name!r}")
