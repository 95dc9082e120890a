"""The epoch loop every method shares (`EpochTrainer`), so that the batches, augmentation,
learning-rate schedule, validation and best-checkpoint rule are the same code for every method.

Every random draw (data order, augmentation, reparameterisation noise, prior samples) comes from one
`torch.Generator` seeded by the run's seed and saved in the checkpoint, so a run is deterministic on
the CPU and a resumed run continues exactly where it stopped."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from dgc.config import RunConfig, TrainConfig
from dgc.core import distributed, precision, progress
from dgc.core.errors import DGCError
from dgc.core.io import CheckpointFiles, save_checkpoint
from dgc.core.metrics import compute_metrics
from dgc.nn.losses import class_log_prior
from dgc.train.augment import augment_batch
from dgc.train.logs import EpochLog


@dataclass
class TrainData:
    """Training (and optional validation) tensors, float (N, C, H, W), and whole-set counts.
    `weights`, where the rows are weighted (`DGCClassifier.fit`'s sample_weight), holds one
    weight per training row, mean 1, and `weighted_counts` each class's total weight over the
    whole set: the class prior and the oversampling rates then follow the weights."""

    x: torch.Tensor
    y: torch.Tensor
    train_counts: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    hflip: bool
    weights: torch.Tensor | None = None
    weighted_counts: torch.Tensor | None = None

    def class_totals(self) -> torch.Tensor:
        """Each class's weight in the training set: its count, or its rows' total weight."""
        return self.train_counts if self.weighted_counts is None else self.weighted_counts

    def row_weights(self, index: torch.Tensor) -> torch.Tensor | None:
        """The weights of training rows `index` (None: every row weighs 1)."""
        return None if self.weights is None else self.weights[index]


def learning_rate(cfg: RunConfig, epoch: float) -> float:
    """The schedule at a (fractional) epoch. `manual` and `manual_smooth` are the paper's: halved
    from epoch 30 and divided by 5 more from epoch 50; 100× lower over the E epochs. The `_released`
    ones are what the authors' code does: it recomputes the decay from 1 every epoch, so `manual` is
    halved in epoch 30 alone (epoch 50 never comes) and `manual_smooth` stays at one step of its
    decay throughout."""
    t = cfg.train
    if t.schedule == "manual":
        return t.lr * (0.5 if epoch >= 30 else 1.0) * (0.2 if epoch >= 50 else 1.0)
    if t.schedule == "manual_released":
        return t.lr * (0.5 if math.floor(epoch) == 30 else 1.0)
    if t.schedule == "manual_smooth":
        return t.lr * 100.0 ** (-math.floor(epoch) / t.epochs)
    if t.schedule == "manual_smooth_released":
        return t.lr * 100.0 ** (-1 / t.epochs)
    if t.schedule == "cosine":
        return t.lr * 0.5 * (1.0 + math.cos(math.pi * epoch / t.epochs))
    return t.lr


class EpochTrainer:
    """Owns the model's Adam optimiser, the random generator and the history of one run; runs the
    epochs, validates, keeps the weights `train.keep` names and checkpoints after every
    epoch. Subclasses (DGC's `dgc.train.dgc`, the baselines' `dgc.train.classifier`) supply
    `train_step` and `validation_scores`, and may use the `prepare`, `describe` and `epoch_order`
    hooks."""

    shown: tuple[str, ...] = ("loss",)  # epoch-record keys shown on the progress bar
    remedy = "a lower learning rate (--lr) or gradient clipping (--grad-clip)"

    def __init__(self, model: nn.Module, cfg: RunConfig, data: TrainData,
                 files: CheckpointFiles | None = None, progress: bool = False,
                 log: Callable[[str], None] = print):
        self.model, self.cfg, self.data = model, cfg, data
        self.files, self.progress, self.log = files, progress, log
        t = cfg.train
        self.optimizer = optimizer(model.parameters(), t)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.log_prior = class_log_prior(data.class_totals()).to(data.x.device)
        self.epoch, self.step, self.seconds = 0, 0, 0.0
        self.best: dict[str, Any] = {"score": None, "epoch": None}
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.history: dict[str, Any] = {"epochs": []}

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "epoch": self.epoch,
            "step": self.step,
            "seconds": self.seconds,
            "best": dict(self.best),
            "best_model": self.best_weights,  # so that best.pt can never disagree with it
            "history": self.history,
            "config": self.cfg.to_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.epoch, self.step, self.seconds = state["epoch"], state["step"], state["seconds"]
        self.best, self.history = dict(state["best"]), state["history"]
        self.best_weights = state.get("best_model")  # older checkpoints lack it

    def fit(self) -> dict[str, Any]:
        """Train up to `cfg.train.epochs`, checkpointing after every epoch."""
        self.prepare()
        logs = (EpochLog(self.files.epochs, self.files.tensorboard)
                if self.files is not None and self.files.epochs is not None else None)
        try:
            if logs is not None:
                logs.start(self.history["epochs"], self.step)
            self.run_epochs(logs)
        finally:
            if logs is not None:
                logs.close()
        return self.history

    def run_epochs(self, logs: EpochLog | None) -> None:
        """`fit`'s epochs, each logged (`logs`) before its checkpoint is written."""
        t = self.cfg.train
        bar = progress.bar(range(self.epoch, t.epochs), self.progress, desc="train", unit="epoch",
                           initial=self.epoch, total=t.epochs)
        lines = self.progress and not progress.interactive()
        for _ in bar:
            started = time.perf_counter()
            record = self.train_epoch()
            record.update(self.describe())
            if len(self.data.y_val) and ((self.epoch + 1) % t.eval_every == 0
                                         or self.epoch + 1 == t.epochs):
                record["val"] = self.validate()
            self.epoch += 1
            self.seconds += time.perf_counter() - started
            record["seconds"] = round(time.perf_counter() - started, 3)
            record["step"] = self.step
            self.history["epochs"].append(record)
            if logs is not None:  # first, so that a resume never finds a row missing
                logs.write(record)
            self.keep_best(record)
            self.save()
            shown = ({k: f"{v:.3g}" for k, v in record.items() if k in self.shown}
                     | ({"val_acsa": f"{record['val']['acsa']:.4f}"} if "val" in record else {}))
            bar.set_postfix(shown)
            if lines:  # a log file or pipe gets one line per epoch instead of the bar
                self.log(f"dgc: epoch {self.epoch}/{t.epochs} "
                         + " ".join(f"{k} {v}" for k, v in shown.items())
                         + f" ({record['seconds']:.1f} s)")

    def prepare(self) -> None:
        """Work done once before the first epoch (and skipped when resuming after it)."""

    def describe(self) -> dict[str, Any]:
        """Extra entries for an epoch's history record."""
        return {}

    def epoch_order(self) -> torch.Tensor:
        """The training rows of one epoch, in the order they are visited."""
        return torch.randperm(len(self.data.y), generator=self.generator)

    def shared_order(self) -> torch.Tensor:
        """`epoch_order`, the same in every torchrun process, seeded by (seed, epoch); each
        process then draws its own noise and augmentation, seeded by (seed, epoch, rank), so a
        resumed run continues exactly."""
        if distributed.world_size() == 1:
            return self.epoch_order()
        self.generator.manual_seed(distributed.derived_seed(self.cfg.seed, self.epoch))
        order = self.epoch_order()
        self.generator.manual_seed(distributed.derived_seed(self.cfg.seed, self.epoch,
                                                            distributed.rank()))
        return order

    def train_epoch(self) -> dict[str, Any]:
        t = self.cfg.train
        world, rank = distributed.world_size(), distributed.rank()
        order = self.shared_order()
        size = t.batch_size * world  # under torchrun each process takes its share of a step
        batches = [order[i:i + size] for i in range(0, len(order), size)]
        batches = [b for b in batches if len(b) >= 2 * world]
        sums: dict[str, float] = {}
        for i, index in enumerate(batches):
            lr = learning_rate(self.cfg, self.epoch + i / len(batches))
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            for name, value in self.train_step(index[rank::world]).items():
                sums[name] = sums.get(name, 0.0) + value
            self.step += 1
        distributed.average_buffers(self.model)
        record = {name: value / len(batches) for name, value in sums.items()}
        return {"epoch": self.epoch + 1, "lr": learning_rate(self.cfg, self.epoch), **record}

    def train_step(self, index: torch.Tensor) -> dict[str, float]:
        """One optimisation step on the training rows `index`; returns its loss values."""
        raise NotImplementedError

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The images and labels of rows `index`, augmented when the recipe asks for it."""
        t = self.cfg.train
        x, y = self.data.x[index], self.data.y[index]
        if t.augment:
            x = augment_batch(x, t, self.data.hflip, self.generator)
        return x, y

    def mixed_precision(self) -> AbstractContextManager[Any]:
        """bfloat16 autocast for a forward pass when `train.bf16` asks for it."""
        return precision.autocast(self.cfg.train.bf16, self.data.x.device.type)

    def mixing(self, n: int) -> tuple[float, torch.Tensor | None]:
        """Mixup's λ ~ Beta(α, α) and the partner of each of `n` rows (`train.mixup` = α; λ = 1
        and no partners without it), drawn from the run's generator so that a resumed run
        draws the same."""
        alpha = self.cfg.train.mixup
        if not alpha:
            return 1.0, None
        seed = int(torch.randint(2**31, (1,), generator=self.generator))
        mix = float(np.random.default_rng(seed).beta(alpha, alpha))
        return mix, torch.randperm(n, generator=self.generator)

    def cap_norms(self, layer: nn.Module) -> None:
        """MaxNorm (`train.max_norm`): every class's row of the last `layer`'s weight scaled
        down to that norm where it is longer, after the step."""
        if cap := self.cfg.train.max_norm:
            weight = cast(torch.Tensor, layer.weight)
            with torch.no_grad():
                weight.mul_((cap / weight.norm(dim=1, keepdim=True)).clamp(max=1.0))

    def finish_gradients(self, parameters: Any) -> None:
        """Average the gradients over torchrun's processes (none without it), then clip them."""
        parameters = list(parameters)
        distributed.average_gradients(parameters)
        if self.cfg.train.grad_clip:
            torch.nn.utils.clip_grad_norm_(parameters, self.cfg.train.grad_clip)

    def check_finite(self, terms: dict[str, torch.Tensor]) -> None:
        """Stop at the first non-finite loss term, before it reaches the weights or a file."""
        for name, value in terms.items():
            if not torch.isfinite(value):
                kept = ("" if self.files is None else
                        f"; {self.files.latest} keeps epoch {self.epoch}" if self.epoch
                        else "; no epoch had finished, so no checkpoint was written")
                raise DGCError(f"the {name} loss became {float(value.detach())} at epoch "
                               f"{self.epoch + 1}, step {self.step + 1}{kept}. Try {self.remedy} "
                               "in a new run")

    def validation_scores(self) -> torch.Tensor:
        """Class scores (N_val, C) of the validation images; the argmax is the prediction."""
        raise NotImplementedError

    def validate(self) -> dict[str, float]:
        """ACSA, F_macro and G_macro on the validation split. Each image's prediction goes into
        the history's `validation` entry too, so that a rule for the kept epoch can be judged on
        validation images that did not choose it (experiments/checkpoint_rule.py)."""
        labels = self.data.y_val.cpu().numpy()
        predicted = self.validation_scores().argmax(1).cpu().numpy()
        kept = self.history.setdefault("validation", {"labels": labels.tolist(), "epochs": [],
                                                      "predicted": []})
        kept["epochs"].append(self.epoch + 1)
        kept["predicted"].append(predicted.tolist())
        metrics = compute_metrics(labels, predicted, self.data.train_counts.numpy())
        return {k: metrics[k] for k in ("acsa", "f_macro", "g_macro")}

    def keep_best(self, record: dict[str, Any]) -> None:
        """Keep the weights `train.keep` names: those of the best validation ACSA (the last
        epoch's without validation), or the last epoch's."""
        score, best = record.get("val", {}).get("acsa"), self.best["score"]
        if (self.cfg.train.keep == "best" and len(self.data.y_val)
                and (score is None or (best is not None and score <= best))):
            return
        self.best = {"score": score, "epoch": self.epoch}
        self.best_weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        if self.files is not None:
            save_checkpoint(self.files.best, {"model": self.best_weights, **self.best})

    def restore_best(self) -> nn.Module:
        """The model with the weights `keep_best` kept loaded back into it."""
        if self.best_weights is None:
            raise DGCError("training has not finished an epoch, so it has no weights to "
                           "evaluate; call fit() first")
        self.model.load_state_dict(self.best_weights)
        return self.model

    def save(self) -> None:
        if self.files is not None:
            save_checkpoint(self.files.latest, self.state_dict(), previous=self.files.previous)


def optimizer(parameters: Any, t: TrainConfig) -> torch.optim.Optimizer:
    """Adam with the run's β1, or AdamW with `train.weight_decay` (decoupled decay); fused: one
    kernel for every parameter, 4x faster than the loop on the CPU
    (docs/results/training-speed.md)."""
    if t.weight_decay:
        return torch.optim.AdamW(parameters, lr=t.lr, betas=(t.beta1, 0.999),
                                 weight_decay=t.weight_decay, fused=True)
    return torch.optim.Adam(parameters, lr=t.lr, betas=(t.beta1, 0.999), fused=True)
