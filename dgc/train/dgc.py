"""Training DGC (METHOD §2–§3): encoder pre-training, the LVO step, the joint step and the
latent-oversampling step on the label head, on the shared loop of `dgc.train.loop`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from dgc.config import RunConfig
from dgc.core import distributed
from dgc.core.io import CheckpointFiles
from dgc.nn.losses import (
    classification_loss,
    imq_mmd,
    moment_matching_loss,
    oversampling_index,
    reconstruction_loss,
)
from dgc.nn.model import DGC, reparameterise, std_from_logvar
from dgc.nn.prediction import class_scores
from dgc.train.loop import EpochTrainer, TrainData, optimizer

TERM_NAMES = {"recon": "reconstruction", "mmd": "MMD", "prior_kl": "prior KL",
              "cls": "cross-entropy"}


class Trainer(EpochTrainer):
    model: DGC
    shown = ("recon", "mmd", "prior_kl", "cls")
    remedy = ("a lower learning rate (--lr), gradient clipping (--grad-clip) or a smaller "
              "--sampling-rate")

    def __init__(self, model: DGC, cfg: RunConfig, data: TrainData,
                 files: CheckpointFiles | None = None, progress: bool = False,
                 log: Callable[[str], None] = print):
        super().__init__(model, cfg, data, files, progress, log)
        t = cfg.train
        self.encoder_optimizer = optimizer(model.encoder.parameters(), t)
        self.history = {"pretrain": None, "epochs": [], "trace_points": trace_points(data.y)}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(),
                "encoder_optimizer": self.encoder_optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.encoder_optimizer.load_state_dict(state["encoder_optimizer"])

    def prepare(self) -> None:
        if self.history["pretrain"] is None:
            self.history["pretrain"] = self.pretrain()

    def describe(self) -> dict[str, Any]:
        return {"trace": self.trace()}

    def pretrain(self) -> dict[str, Any]:
        """Moment-match the encoder's codes to N(0, I), stopping once the loss is below tol."""
        t = self.cfg.train
        steps = 0
        while True:
            index = torch.randperm(len(self.data.y), generator=self.generator)[: t.pretrain_batch]
            with self.mixed_precision():
                mu, logvar = self.model.encoder(self.data.x[index], self.data.y[index])
                loss = moment_matching_loss(reparameterise(mu, logvar, self.noise(len(index))),
                                            self.data.row_weights(index))
            self.check_finite({"pre-training moment-matching": loss})
            loss_value = float(distributed.mean(loss.detach()))
            if loss_value < t.pretrain_tol or steps >= t.pretrain_steps:
                break
            self.encoder_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            distributed.average_gradients(self.model.encoder.parameters())
            self.encoder_optimizer.step()
            steps += 1
        return {"steps": steps, "loss": loss_value}

    def train_step(self, index: torch.Tensor) -> dict[str, float]:
        """LVO step (optional), joint step, then the label-head step on oversampled codes."""
        t = self.cfg.train
        x, y = self.batch(index)
        weights = self.data.row_weights(index)
        values: dict[str, float] = {}
        if t.lvo:
            loss, _, _ = self.objective(x, y, weights)
            self.encoder_optimizer.zero_grad(set_to_none=True)
            loss.backward(inputs=list(self.model.encoder.parameters()))
            self.finish_gradients(self.model.encoder.parameters())
            self.encoder_optimizer.step()
            values["lvo"] = float(loss.detach())
        loss, terms, out = self.objective(x, y, weights)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.finish_gradients(self.model.parameters())
        self.optimizer.step()
        values.update(terms, loss=float(loss.detach()))

        rows = oversampling_index(y, self.data.class_totals(), t.sampling_rate,
                                  t.sampling_rate * float(self.data.train_counts.max() - 1))
        mu, logvar = out["mu"].detach()[rows], out["logvar"].detach()[rows]
        z, labels = reparameterise(mu, logvar, self.noise(len(rows))), y[rows]
        mix, partner = self.mixing(len(rows))
        with self.mixed_precision():
            logits = self.model.head(z if partner is None else mix * z + (1 - mix) * z[partner])
            row_weights = None if weights is None else weights[rows]
            head_loss = mix * classification_loss(logits, labels, t.cls_weight, self.log_prior,
                                                  t.logit_adjust_tau, row_weights)
            if partner is not None:  # mixup of the latent codes (`train.mixup`)
                head_loss = head_loss + (1 - mix) * classification_loss(
                    logits, labels[partner], t.cls_weight, self.log_prior, t.logit_adjust_tau,
                    None if row_weights is None else row_weights[partner])
        self.check_finite({"oversampled cross-entropy": head_loss})
        self.optimizer.zero_grad(set_to_none=True)
        head_loss.backward()
        self.finish_gradients(self.model.head.parameters())
        self.optimizer.step()
        self.cap_norms(self.model.head.net[-1])
        values["head_cls"] = float(head_loss.detach())
        return values

    def objective(self, x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, dict[str, float], dict[str, Any]]:
        """L = ½‖x − G_X(z)‖² + λ·MMD_IMQ(z, N(0, I)) + w_cls·CE(y, G_Y(z))  (METHOD §2),
        plus β·KL(q(z|x,y) ‖ learned prior) with a mixture prior (DGCMM); a term whose weight
        is 0 is not computed. Row `weights` (`TrainData.weights`) weigh every term."""
        t = self.cfg.train
        with self.mixed_precision():
            out = self.model(x, y, self.noise(len(y)))
            terms = {"recon": reconstruction_loss(x, out["recon"], weights)}
            loss = terms["recon"]
            if t.mmd_weight:
                terms["mmd"] = imq_mmd(out["z"], self.noise(len(y)), weights)
                loss = loss + t.mmd_weight * terms["mmd"]
            if self.model.prior is not None and t.prior_weight:
                terms["prior_kl"] = self.model.prior.kl(out["mu"], out["logvar"], out["z"], y,
                                                        weights)
                loss = loss + t.prior_weight * terms["prior_kl"]
            terms["cls"] = classification_loss(out["logits"], y, t.cls_weight, self.log_prior,
                                               t.logit_adjust_tau, weights)
            loss = loss + terms["cls"]
        self.check_finite({TERM_NAMES[name]: value for name, value in terms.items()})
        return loss, {name: float(value.detach()) for name, value in terms.items()}, out

    def noise(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.model.cfg.latent_dim,
                           generator=self.generator).to(self.data.x.device)

    def validation_scores(self) -> torch.Tensor:
        """The run's prediction rule with `train.val_samples` samples."""
        cfg = dataclasses.replace(self.cfg.predict, samples=self.cfg.train.val_samples,
                                  importance=False)
        return class_scores(self.model, self.data.x_val, cfg, seed=self.cfg.seed)

    def trace(self) -> dict[str, list[float]]:
        """μ and σ of the first latent coordinate of two fixed training points (paper Fig. 4)."""
        index = torch.tensor(self.history["trace_points"])
        was_training = self.model.training
        self.model.eval()
        with torch.inference_mode():
            mu, logvar = self.model.encoder(self.data.x[index], self.data.y[index])
        self.model.train(was_training)
        return {"mu": mu[:, 0].tolist(), "sigma": std_from_logvar(logvar)[:, 0].tolist()}


def trace_points(y: torch.Tensor) -> list[int]:
    """The first training image of the largest and of the smallest class present."""
    counts = np.bincount(y.cpu().numpy())
    present = np.flatnonzero(counts)
    first, last = present[np.argmax(counts[present])], present[np.argmin(counts[present])]
    return [int(torch.nonzero(y == first)[0]), int(torch.nonzero(y == last)[0])]
