"""`DGCClassifier`: the Deep Generative Classifier as a scikit-learn estimator.

It wraps the library's own `DGC` (a conv backbone for images, MLPs for feature tables), `Trainer`
(in memory, no run directory), Bayes rule, stratified validation split and checkpoint format, so a
fitted estimator is the same model, objective and prediction as a `dgc train` run.

What it accepts, and how it scales it (the statistics come from the training set and are saved):

- tables `(n, d)`: every feature standardised to mean 0 and standard deviation 1 (a constant
  feature is only centred), because the MLP decoder is a unit-variance Gaussian p(x | z);
- images `(n, H, W)` or `(n, H, W, C)`: uint8 is divided by 255; any other dtype is used as it is
  when the training images lie in [0, 1] and is otherwise mapped by the training set's minimum
  and maximum onto [0, 1]; at prediction time values are clipped to [0, 1], the range of the
  image decoder's sigmoid."""

from __future__ import annotations

import copy
import numbers
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_array, check_is_fitted

from dgc.config import ModelConfig, PredictConfig, RunConfig, TrainConfig, setting_error, validate
from dgc.core.errors import DGCError
from dgc.core.io import load_checkpoint, load_weights, save_checkpoint
from dgc.data import split_validation
from dgc.nn.backbones import with_pretrained
from dgc.nn.model import DGC, check_fits, images_to_tensor
from dgc.nn.novelty import dgc_scores
from dgc.nn.prediction import class_scores
from dgc.nn.priors import adjust_posteriors, check_prior, em_prior, trained_prior
from dgc.train.dgc import Trainer
from dgc.train.loop import TrainData

try:
    from sklearn.utils.validation import validate_data
except ImportError:  # scikit-learn < 1.6 has the same function as a method

    def validate_data(estimator: BaseEstimator, *args: Any, **kwargs: Any) -> Any:
        return estimator._validate_data(*args, **kwargs)


FORMAT = "dgc.DGCClassifier/1"
SEED_BOUND = 2**31 - 1
# Each hyper-parameter and the setting it is, checked as the command line checks that setting
# (`dgc.config.setting_error`); `device` is torch's to check.
PARAMS = {"latent_dim": "model.latent_dim", "width": "model.width", "hidden": "model.hidden",
          "epochs": "train.epochs", "batch_size": "train.batch_size",
          "learning_rate": "train.lr", "sampling_rate": "train.sampling_rate",
          "cls_weight": "train.cls_weight", "logit_adjust_tau": "train.logit_adjust_tau",
          "validation_fraction": "train.val_fraction", "samples": "predict.samples",
          "prior": "model.prior", "backbone": "model.backbone",
          "weight_decay": "train.weight_decay", "max_norm": "train.max_norm",
          "mixup": "train.mixup"}


class DGCClassifier(ClassifierMixin, BaseEstimator):
    """Deep Generative Classifier (CVPR 2020) for imbalanced images and feature tables.

    Training minimises ½‖x − G_X(z)‖² + MMD(z, N(0, I)) + w·CE(y, G_Y(z)) with latent
    oversampling of the minority classes; prediction is Bayes' rule by importance sampling over
    q(z | x, y = c) for every class c (METHOD §2–§4). `predict` and `predict_proba` draw their
    noise once per call from a generator seeded by the fit's seed and shared by all rows, so a
    fitted estimator gives the same answer for a row on every call and in any subset (for
    tables exactly, as prediction runs in float64; for images to float32 rounding, ~1e-7).

    The defaults suit small tables (hundreds to thousands of rows, tens of features) and train
    in seconds on a CPU; they were chosen by a handful of fits on imbalanced digits and wine
    splits other than those of examples/tabular.py. A 32-d code and 128-unit layers are ample
    for such data; 100 epochs of Adam at lr 1e-3 with a cosine schedule end at a small learning
    rate, so the last epoch is kept (`validation_fraction=0`): a tenth of a minority class of
    ten rows is one row, too few to select an epoch with. The cross-entropy is averaged
    (`cls_weight=1`) rather than summed as in the paper, because on standardised tables the
    reconstruction term carries class information (alone it ranks classes almost as well as the
    label head) and a summed cross-entropy drowns it; it is logit-adjusted (τ = 1) as in the
    library's `dgc` method. The label enters the encoder's mean as in the paper (a label-free
    mean lost 2–18 points of ACSA on these tables).
    For images, use the paper's summed cross-entropy (`cls_weight=None`), which the conv net
    needs (30 epochs on imbalanced digits images: ACSA 0.72 against 0.56 with the mean), and on
    a CPU a narrower `width` (16–32). The number of torch threads is the caller's
    (`torch.set_num_threads`); networks of the default size train fastest on one thread, by far
    so on a busy machine.

    Parameters
    ----------
    latent_dim : size k of the latent code z.
    width : tables: units of the encoder's and decoder's hidden layer; images: filters of the
        first convolution (doubling per layer), the decoder getting a quarter of it as in the
        `cpu` preset.
    hidden : units of the encoder layer where the label joins.
    epochs, batch_size, learning_rate : Adam (β1 = 0.5) with a cosine schedule.
    sampling_rate : r of the latent oversampling (METHOD §3); 0 turns it off.
    samples : S, the codes per class drawn for the Bayes rule.
    cls_weight : weight of the mean cross-entropy; None sums it over the batch as the official
        code does (an effective weight of `batch_size`).
    logit_adjust_tau : τ of the logit-adjusted cross-entropy (0: plain cross-entropy).
    validation_fraction : stratified share held out to select the best epoch; 0 keeps the last.
    prior : p(z): "normal" (N(0, I) with the MMD, as the paper), "mixture" (DGCMM's learned
        mixture, one component per class, with its KL in place of the MMD) or "class" (the
        mixture with component c tied to class c).
    backbone : the image trunk (`dgc.nn.backbones`): "conv" (METHOD §1), "resnet" or an
        ImageNet-trained "efficientnet-lite0|1|2" (from its wheel); images only.
    weight_decay, max_norm, mixup : the long-tail recipe (AdamW's decoupled weight decay, a cap
        on every class's weight norm in the label head, mixup's α on the latent codes of the
        head step); 0 or None turns each off.
    class_weight : None, "balanced" or {label: weight}, as scikit-learn's classifiers take it:
        each row's weight is multiplied by its class's (see `fit`'s sample_weight).
    device : torch device for training and prediction.
    random_state : seed of the initialisation, data order, noise and validation split.
    verbose : >0 shows a progress bar over the epochs.

    Attributes
    ----------
    classes_, n_features_in_ (d, or H·W·C for images), feature_names_in_ (tables with named
    columns), input_shape_ ((d,) or (H, W, C)), offset_ and scale_ (the input scaling), model_
    (the fitted `dgc.nn.model.DGC`), class_counts_ (training rows per class; with weights,
    each class's total weight, scaled to sum to the rows of non-zero weight), random_seed_ (the
    seed of training and of prediction's noise), best_epoch_, history_ (the trainer's per-epoch
    losses and validation metrics).
    """

    model_: DGC  # set by fit; declared so that type checkers know it

    def __init__(self, latent_dim: int = 32, width: int = 128, hidden: int = 128,
                 epochs: int = 100, batch_size: int = 64, learning_rate: float = 1e-3,
                 sampling_rate: float = 0.6, samples: int = 10, cls_weight: float | None = 1.0,
                 logit_adjust_tau: float = 1.0, validation_fraction: float = 0.0,
                 prior: str = "normal", backbone: str = "conv", weight_decay: float = 0.0,
                 max_norm: float | None = None, mixup: float = 0.0,
                 class_weight: dict[Any, float] | str | None = None, device: str = "cpu",
                 random_state: int | np.random.RandomState | None = None, verbose: int = 0):
        self.latent_dim = latent_dim
        self.width = width
        self.hidden = hidden
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.sampling_rate = sampling_rate
        self.samples = samples
        self.cls_weight = cls_weight
        self.logit_adjust_tau = logit_adjust_tau
        self.validation_fraction = validation_fraction
        self.prior = prior
        self.backbone = backbone
        self.weight_decay = weight_decay
        self.max_norm = max_norm
        self.mixup = mixup
        self.class_weight = class_weight
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True  # (n, H, W) images
        return tags

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> DGCClassifier:
        """Train on images (n, H, W[, C]) or a table (n, d) with any hashable class labels.
        `model_` is set last, so an estimator whose fit failed half-way counts as unfitted.

        `sample_weight` (and `class_weight`) weigh the rows, checked as scikit-learn checks
        them. A row of weight 0 is removed before anything else, so zero weights are exactly
        removed rows. The other weights are scaled to mean 1 (their ratios matter, not their
        scale, which would change the learning rate) and enter every loss term: the
        reconstruction, the MMD (its weighted U-statistics) or a learned prior's KL, the
        cross-entropy of the joint step and of the oversampled head step, the encoder's
        moment-matching pre-training; and the class totals that set the logit adjustment and
        the oversampling rates, and a table's standardisation. Equal weights are no weights.
        Integer weights match repeated rows in expectation, not exactly: the repeated rows
        fall into other batches with other noise, over more steps an epoch
        (tests/test_estimator.py measures how close)."""
        if hasattr(self, "model_"):
            del self.model_
        self._check_params()
        X, y = _sklearn_checked(validate_data, self, X, y, allow_nd=True, dtype="numeric")
        check_classification_targets(y)
        weights = self._row_weights(X, y, sample_weight)
        if weights is not None:  # a row of weight 0 is a row removed
            X, y, weights = X[weights > 0], y[weights > 0], weights[weights > 0]
            weights = None if np.all(weights == weights[0]) else weights / weights.mean()
        classes, y_index = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise DGCError(f"DGCClassifier needs at least two classes to learn, but y holds one "
                           f"class only ({classes[0]}) among the rows of non-zero weight; add "
                           "examples of another class")
        X = _as_examples(X)
        if X.ndim == 2 and self.backbone != "conv":
            raise DGCError(f"backbone={self.backbone!r} is an image network, but X is a table; "
                           "leave backbone at 'conv' (tables get MLPs)")
        self.classes_ = classes
        self.input_shape_ = tuple(int(s) for s in X.shape[1:])
        self.n_features_in_ = int(np.prod(self.input_shape_))
        self.offset_, self.scale_ = _input_statistics(X, weights)
        self.random_seed_ = seed = _seed(self.random_state)
        counts = np.bincount(y_index, minlength=len(classes))
        self.class_counts_ = (counts if weights is None
                              else np.bincount(y_index, weights, minlength=len(classes)))

        cfg = self._run_config(seed)
        check_fits(lambda: DGC(self.input_shape_, len(classes), cfg.model), self.input_shape_, cfg)
        rows, y_train, val, y_val = split_validation(np.arange(len(y_index)),
                                                     y_index.astype(np.int64),
                                                     self.validation_fraction, seed)
        x = self._scaled(X)
        data = TrainData(x=self._tensor(x[rows]), y=torch.from_numpy(y_train),
                         train_counts=torch.from_numpy(counts.astype(np.int64)),
                         x_val=self._tensor(x[val]), y_val=torch.from_numpy(y_val), hflip=False)
        if weights is not None:
            data.weights = torch.from_numpy(weights[rows].astype(np.float32)).to(self.device)
            data.weighted_counts = torch.from_numpy(self.class_counts_)
        with torch.random.fork_rng(devices=[]):  # seeded, leaving the caller's RNG untouched
            torch.manual_seed(seed)
            model = with_pretrained(DGC(self.input_shape_, len(classes), cfg.model))
        model = model.to(self.device)
        trainer = Trainer(model, cfg, data, progress=self.verbose > 0)
        self.history_ = trainer.fit()
        trainer.restore_best()
        self.best_epoch_ = trainer.best["epoch"]
        self.model_ = model.eval()
        return self

    def _row_weights(self, X: np.ndarray, y: np.ndarray, sample_weight: Any) -> np.ndarray | None:
        """Each row's weight, `sample_weight` times its class's `class_weight`, checked as
        scikit-learn checks them (one finite, non-negative number a row, not all zero); None
        when neither is given. The weights enter every term of the loss, the class prior and
        the oversampling rates (their class totals), and the input scaling of tables."""
        if sample_weight is None and self.class_weight is None:
            return None
        weights = _sklearn_checked(_check_sample_weight, sample_weight, X, dtype=np.float64,
                                   ensure_non_negative=True)
        if self.class_weight is not None:
            weights = weights * _sklearn_checked(compute_sample_weight, self.class_weight, y)
        if not weights.any():
            raise DGCError("Sample weights must contain at least one non-zero number; every row "
                           "has weight zero once class_weight is applied")
        return weights

    def _check_params(self) -> None:
        """Refuse hyper-parameters that cannot work, naming the constructor argument."""
        for name, key in PARAMS.items():
            if error := setting_error(key, getattr(self, name), name):
                raise DGCError(error)
        try:
            device = torch.device(self.device)
        except (RuntimeError, TypeError) as error:
            raise DGCError(f"device {self.device!r} is not a torch device ({error}); "
                           "use 'cpu' or 'cuda'") from error
        if device.type == "cuda" and not torch.cuda.is_available():
            raise DGCError(f"device {self.device!r} was asked for but no CUDA device is "
                           "available; use device='cpu'")

    def _run_config(self, seed: int) -> RunConfig:
        """The library configuration these hyper-parameters stand for, built from them alone
        (an estimator has no dataset or preset for `resolve_config`). It is not the `dgc`
        method's: it shares its cosine schedule, logit adjustment and lack of an LVO step, but
        by default averages the cross-entropy, keeps the label in the encoder's mean and the
        last epoch, clips no gradients, augments nothing and predicts with the Bayes rule over
        every class (S = `samples`); the class docstring says why."""
        train = TrainConfig(
            epochs=self.epochs, batch_size=self.batch_size, lr=float(self.learning_rate),
            schedule="cosine", cls_weight=None if self.cls_weight is None
            else float(self.cls_weight), logit_adjust_tau=float(self.logit_adjust_tau),
            lvo=False, sampling_rate=float(self.sampling_rate), augment=False,
            val_fraction=float(self.validation_fraction),
            mmd_weight=1.0 if self.prior == "normal" else 0.0, weight_decay=self.weight_decay,
            max_norm=self.max_norm, mixup=self.mixup)
        cfg = RunConfig(exp="sklearn", seed=seed, method="dgc", preset="estimator",
                        device=str(self.device), model=self._model_config(),
                        train=train, predict=self._predict_config())
        validate(cfg)
        return cfg

    def _model_config(self) -> ModelConfig:
        table = self._is_table()
        return ModelConfig(latent_dim=self.latent_dim, width=self.width, hidden=self.hidden,
                           decoder_width=self.width if table else max(1, self.width // 4),
                           init="torch" if table else "paper", prior=self.prior,
                           backbone=self.backbone)

    def _predict_config(self) -> PredictConfig:
        return PredictConfig(samples=self.samples, rule="bayes")

    def predict_proba(self, X: Any, test_prior: Any = None) -> np.ndarray:
        """p(y = c | x) by Bayes' rule (METHOD §4), columns in the order of `classes_`. `test_prior`
        re-weighs the posteriors to the class prior of the data being predicted (label shift,
        `dgc.nn.priors`): one probability per class, or "em" to estimate it from the rows of X
        themselves (Saerens et al. 2002; give X as one batch from that data). The posteriors are
        taken to be for π^(1 − τ), π the training frequencies and τ the `logit_adjust_tau` they were
        trained with."""
        model, x = self._prepared(X)
        scores = class_scores(model, x, self._predict_config(), seed=self.random_seed_)
        proba = torch.softmax(scores.double(), dim=1).cpu().numpy()
        if test_prior is None:
            return proba
        source = trained_prior(self.class_counts_, self.logit_adjust_tau)
        if isinstance(test_prior, str) and test_prior == "em":
            return em_prior(proba, source)[1]
        return adjust_posteriors(proba, source, check_prior(test_prior, len(self.classes_)))

    def predict(self, X: Any, test_prior: Any = None) -> np.ndarray:
        """The label of highest posterior probability (`test_prior` as for `predict_proba`)."""
        proba = self.predict_proba(X, test_prior)  # first: it refuses an unfitted estimator
        return self.classes_[np.argmax(proba, axis=1)]

    def score_ood(self, X: Any) -> dict[str, np.ndarray]:
        """Novelty scores of rows of X, higher = more novel (`dgc.nn.novelty`): `msp`,
        `evidence` (−log Σ_c exp of the Bayes-rule scores), `recon` (the best class's
        reconstruction error) and `latent` (the codes' density under the prior)."""
        model, x = self._prepared(X)
        scores = dgc_scores(model, x, self._predict_config(), self.random_seed_)
        return {name: value.double().cpu().numpy() for name, value in scores.items()}

    def _prepared(self, X: Any) -> tuple[DGC, torch.Tensor]:
        """The model and the checked, scaled input, in float64 for tables (so that a row's
        scores do not depend on the rows beside it)."""
        check_is_fitted(self, "model_")
        X = self._check_predict_input(X)
        if self._is_table():
            return copy.deepcopy(self.model_).double(), self._tensor(self._scaled(X, np.float64))
        return self.model_, self._tensor(self._scaled(X))

    def _check_predict_input(self, X: Any) -> np.ndarray:
        if self._is_table():
            return _sklearn_checked(validate_data, self, X, reset=False, dtype="numeric")
        X = _as_examples(_sklearn_checked(check_array, X, allow_nd=True, dtype="numeric"))
        if X.shape[1:] != self.input_shape_:
            raise DGCError(f"X holds images of shape {X.shape[1:]}, but DGCClassifier was fitted "
                           f"on images of shape {self.input_shape_}; resize them")
        return X

    def _is_table(self) -> bool:
        return len(self.input_shape_) == 1

    def _scaled(self, X: np.ndarray, dtype: type = np.float32) -> np.ndarray:
        """Standardised features, or images in [0, 1] (see the module docstring)."""
        scaled = (X.astype(np.float64) - self.offset_) / self.scale_
        if not self._is_table():
            scaled = np.clip(scaled, 0.0, 1.0)
        return scaled.astype(dtype, copy=False)

    def _tensor(self, x: np.ndarray) -> torch.Tensor:
        """(n, d) tables as they are; scaled (n, H, W, C) images in the conv net's layout."""
        if self._is_table():
            return torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
        return images_to_tensor(x, self.device)

    def save(self, path: str | Path) -> None:
        """Write the fitted estimator to one checkpoint (atomic; loads with weights_only=True)."""
        check_is_fitted(self, "model_")
        params = self.get_params(deep=False)
        if not (params["random_state"] is None or _is_int(params["random_state"])):
            params["random_state"] = None  # a RandomState object is not plain data
        state = {
            "format": FORMAT,
            "model": {k: v.detach().cpu() for k, v in self.model_.state_dict().items()},
            "params": params,
            "classes": self.classes_.tolist(),
            "classes_dtype": self.classes_.dtype.str if self.classes_.dtype != object else None,
            "input_shape": list(self.input_shape_),
            "offset": torch.from_numpy(np.asarray(self.offset_, dtype=np.float64)),
            "scale": torch.from_numpy(np.asarray(self.scale_, dtype=np.float64)),
            "class_counts": self.class_counts_.tolist(),
            "random_seed": self.random_seed_,
            "best_epoch": self.best_epoch_,
            "history": self.history_,
        }
        if hasattr(self, "feature_names_in_"):
            state["feature_names"] = [str(name) for name in self.feature_names_in_]
        save_checkpoint(path, state)

    @classmethod
    def load(cls, path: str | Path, device: str | None = None) -> DGCClassifier:
        """An estimator saved by `save`, ready to predict; `device` overrides the saved one."""
        state = load_checkpoint(path)
        if state.get("format") != FORMAT:
            raise DGCError(f"{path} is not a saved DGCClassifier (format {state.get('format')!r}, "
                           f"expected {FORMAT!r})")
        try:
            params = dict(state["params"], **({"device": device} if device else {}))
            estimator = cls(**params)
            dtype = state["classes_dtype"]
            estimator.classes_ = np.array(state["classes"], dtype=object if dtype is None
                                          else np.dtype(dtype))
            estimator.input_shape_ = tuple(state["input_shape"])
            estimator.n_features_in_ = int(np.prod(estimator.input_shape_))
            estimator.offset_ = state["offset"].numpy()
            estimator.scale_ = state["scale"].numpy()
            estimator.class_counts_ = np.asarray(state["class_counts"])  # floats: weighted
            estimator.random_seed_ = int(state["random_seed"])
            estimator.best_epoch_ = state["best_epoch"]
            estimator.history_ = state["history"]
            if "feature_names" in state:
                estimator.feature_names_in_ = np.asarray(state["feature_names"], dtype=object)
            model = DGC(estimator.input_shape_, len(estimator.classes_),
                        estimator._model_config())
            load_weights(model, state["model"], path)
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            raise DGCError(f"{path} holds a DGCClassifier this version cannot read: "
                           f"{error}") from error
        estimator._check_params()
        estimator.model_ = model.to(estimator.device).eval()
        return estimator


def _sklearn_checked(check: Any, *args: Any, **kwargs: Any) -> Any:
    """scikit-learn's input validation, its ValueErrors re-raised as DGCError (same message)."""
    try:
        return check(*args, **kwargs)
    except DGCError:
        raise
    except ValueError as error:
        if type(error).__name__ == "NotFittedError":
            raise
        raise DGCError(str(error)) from error


def _as_examples(X: np.ndarray) -> np.ndarray:
    """Tables (n, d) and images (n, H, W, C) as they are; (n, H, W) images get one channel."""
    if X.ndim == 3:
        return X[..., None]
    if X.ndim not in (2, 4):
        raise DGCError(f"X has shape {X.shape}; expected a table (n, d) or images (n, H, W) "
                       "or (n, H, W, C)")
    return X


def _input_statistics(X: np.ndarray, weights: np.ndarray | None = None
                      ) -> tuple[np.ndarray | np.float64, np.ndarray | np.float64]:
    """(offset, scale) with scaled = (X − offset) / scale; see the module docstring. A table's
    mean and standard deviation are weighted by the rows' `weights`, where given."""
    if X.ndim == 2:
        if weights is None:
            mean = X.mean(axis=0, dtype=np.float64)
            std = X.std(axis=0, dtype=np.float64)
        else:
            mean = np.average(X.astype(np.float64), axis=0, weights=weights)
            std = np.sqrt(np.average((X - mean) ** 2, axis=0, weights=weights))
        return mean, np.where(std > 0, std, 1.0)
    if X.dtype == np.uint8:
        return np.float64(0.0), np.float64(255.0)
    low, high = float(X.min()), float(X.max())
    if low >= 0 and high <= 1:
        return np.float64(0.0), np.float64(1.0)
    return np.float64(low), np.float64(high - low if high > low else 1.0)


def _seed(random_state: Any) -> int:
    """An int seed from a scikit-learn `random_state` (None: a fresh one per fit)."""
    if _is_int(random_state) and 0 <= random_state <= SEED_BOUND:
        return int(random_state)
    return int(check_random_state(random_state).randint(SEED_BOUND))


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
