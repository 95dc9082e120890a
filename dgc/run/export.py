"""`dgc export`: a finished run as one self-contained file that needs neither `dgc` nor, for ONNX,
torch: ONNX (onnxruntime and every other ONNX runtime) or TorchScript (`torch.jit.load`).

The exported graph maps a batch of uint8 images (N, H, W, C), at the run's size and channels, to
class probabilities (N, C) under the run's own decision rule: a baseline's softmax, or DGC's
Bayes rule with the run's prediction settings (rule, top-k, S, importance correction, a learned
prior's weight). DGC's rule draws its S codes z = μ + σ ⊙ ε with one noise ε (S, k) that
`dgc predict` draws from a generator seeded by the run's seed and shares between every image
and class; the graph carries that ε as a constant, so it is deterministic and is the very
function `dgc predict` computes (z = μ, the other deterministic choice, would be another rule,
with other decisions wherever the label term is close). With `novelty`, a DGC graph has a
second output: the `evidence` novelty score of `dgc evaluate --ood` (every class decoded).
The class names, the image shape and the rule go into the file's metadata (ONNX
`metadata_props`; TorchScript's extra file `dgc.json`)."""

from __future__ import annotations

import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dgc.core.errors import DGCError
from dgc.core.io import atomic_write
from dgc.nn.model import DGC
from dgc.nn.novelty import batch_novelty
from dgc.nn.prediction import rule_scores, rule_terms
from dgc.run.finished import Run, load_run
from dgc.run.folder import BEST
from dgc.train.augment import dihedral_views

FORMATS = ("onnx", "torchscript")
OPSET = 17
EXAMPLE_BATCH = 2  # the batch the graph is traced with; the exported batch size is free


class ExportedRule(nn.Module):
    """uint8 images (N, H, W, C) → class probabilities (N, C), averaged over the views
    `predict.views` names, and DGC's `evidence` (N,) of the image alone with `novelty`: the
    run's decision as one graph."""

    def __init__(self, run: Run, novelty: bool = False):
        super().__init__()
        self.model = run.model.float().cpu().eval().requires_grad_(False)
        self.generative = run.family.generator(run.model) is not None
        self.novelty = novelty and self.generative
        predict = run.cfg.predict
        self.dihedral = predict.views == "dihedral"
        if self.generative:
            model: DGC = self.model  # type: ignore[assignment]
            self.terms = rule_terms(model, predict)
            self.kept = (model.n_classes if predict.top_k is None
                         else min(predict.top_k, model.n_classes))
            self.latent_weight = predict.latent_weight
            generator = torch.Generator().manual_seed(run.cfg.seed)  # as `class_scores` draws it
            self.register_buffer("noise", torch.randn(predict.samples, model.cfg.latent_dim,
                                                      generator=generator))

    def forward(self, images: torch.Tensor) -> Any:
        x = images.permute(0, 3, 1, 2).float() / 255.0  # as `images_to_tensor` scales
        views = dihedral_views(x) if self.dihedral else [x]
        probabilities = torch.stack([self.probabilities(view) for view in views]).mean(0)
        if not self.novelty:
            return probabilities
        evidence = batch_novelty(self.model, x, self.noise,  # type: ignore[arg-type]
                                 self.latent_weight, one_pass=True)["evidence"]
        return probabilities, evidence

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        if not self.generative:
            return torch.softmax(self.model(x), dim=1)
        score, _ = rule_scores(self.model, x, self.noise, self.terms,  # type: ignore[arg-type]
                               self.kept, self.latent_weight, one_pass=True)
        return torch.softmax(score, dim=1)


@dataclass
class Exported:
    """What `export_run` wrote, for the command's output."""

    path: Path
    format: str
    outputs: tuple[str, ...]
    metadata: dict[str, str]
    notes: list[str]


def export_run(run_dir: str | Path, fmt: str, out: str | Path, overwrite: bool = False,
               novelty: bool = False) -> Exported:
    """Write the run's model (its `best.pt`) and decision rule to `out` as `fmt` (`FORMATS`)."""
    if fmt not in FORMATS:
        raise DGCError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    out = Path(out)
    if out.exists() and not overwrite:
        raise DGCError(f"{out} already exists; pass --overwrite to replace it, or choose "
                       "another --out")
    if not out.absolute().parent.is_dir():
        raise DGCError(f"--out: the folder {out.absolute().parent} does not exist; create it, "
                       "or choose another --out")
    if Path(run_dir).is_dir() and not (Path(run_dir) / BEST).is_file():
        raise DGCError(f"{run_dir} has no {BEST}: its training has not finished an epoch, so "
                       "there is no model to export; train it (or --resume it) first")
    run = load_run(run_dir)
    predict = run.cfg.predict
    generative = run.family.generator(run.model) is not None
    if novelty and not generative:
        raise DGCError(f"--novelty: {run_dir} is a {run.cfg.method} baseline, which has no "
                       "generative novelty score; export it without --novelty")
    if generative and predict.mmd_term:
        raise DGCError("the run predicts with predict.mmd_term, which depends on which images "
                       "share a batch and so is no function of one image; it cannot be exported")
    notes = []
    if generative:
        notes.append(f"the rule ({run.family.describe(predict)}) draws its codes with a noise "
                     f"ε fixed by the run's seed ({run.cfg.seed}), as `dgc predict` does; the "
                     "graph carries that ε as a constant, so it is deterministic and computes "
                     "what `dgc predict` computes")
    if predict.bf16:
        notes.append("exported in float32: the run's predict.bf16 autocast is not part of "
                     "the graph")
    outputs = ("probabilities", "evidence") if novelty else ("probabilities",)
    metadata = {"class_names": json.dumps(list(run.class_names)),
                "image_shape": json.dumps(list(run.image_shape)),
                "input": "uint8 images (N, H, W, C) in 0..255",
                "outputs": json.dumps(list(outputs)), "method": run.cfg.method,
                "rule": run.family.describe(predict)}
    module = ExportedRule(run, novelty)
    example = torch.zeros(EXAMPLE_BATCH, *run.image_shape, dtype=torch.uint8)
    # the tracers warn of every Python number they fix: the image size, S, the kernel taps
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = (onnx_bytes(module, example, outputs, metadata) if fmt == "onnx"
                else torchscript_bytes(module, example, metadata))
    atomic_write(out, lambda f: f.write(data))
    return Exported(out, fmt, outputs, metadata, notes)


def onnx_bytes(module: nn.Module, example: torch.Tensor, outputs: tuple[str, ...],
               metadata: dict[str, str]) -> bytes:
    """The module as an ONNX model with a free batch size and `metadata` in its properties."""
    try:
        import onnx
    except ImportError as error:
        raise DGCError("--format onnx needs the onnx package: pip install "
                       "'dgc-imbalance[export]' (or pip install onnx)") from error
    buffer = io.BytesIO()
    axes = {"images": {0: "batch"}, **{name: {0: "batch"} for name in outputs}}
    torch.onnx.export(module, (example,), buffer,  # type: ignore[arg-type]  # takes a file too
                      input_names=["images"],
                      output_names=list(outputs), dynamic_axes=axes, opset_version=OPSET,
                      dynamo=False)
    model = onnx.load_from_string(buffer.getvalue())
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def torchscript_bytes(module: nn.Module, example: torch.Tensor,
                      metadata: dict[str, str]) -> bytes:
    """The module traced to TorchScript, `metadata` as the extra file dgc.json."""
    traced = torch.jit.trace(module, (example,), check_trace=False)
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer, _extra_files={"dgc.json": json.dumps(metadata)})
    return buffer.getvalue()
