"""scikit-learn and imbalanced-learn estimators over the library's model and trainer."""
