"""What the studies in experiments/ share: their command line (run folders, --threads) and a
finished DGC run's validation split and test set, ready to score.

Each study chose or checked a default on the validation split of finished runs; the test set
only reports the choice. They are run as scripts, e.g.
`python experiments/recon_weight.py runs/bench-fashion-cpu/dgc-s*`.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from dgc.core.errors import DGCError
from dgc.nn.model import DGC, images_to_tensor
from dgc.run.finished import Run, load_generative_run, recorded_data, validation_split


@dataclass
class Study:
    """One DGC run with its validation split and test set as float tensors on its device."""

    run: Run
    model: DGC
    x_val: torch.Tensor
    y_val: np.ndarray
    x_test: torch.Tensor
    y_test: np.ndarray


def parser(doc: str) -> argparse.ArgumentParser:
    """The study's arguments: run folders and the CPU threads for torch."""
    arguments = argparse.ArgumentParser(description=doc.splitlines()[0])
    arguments.add_argument("runs", nargs="+", help="run folders")
    arguments.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    return arguments


def parse(arguments: argparse.ArgumentParser) -> argparse.Namespace:
    args = arguments.parse_args()
    torch.set_num_threads(args.threads)
    return args


def studies(run_dirs: Sequence[str], wanted: str, script: str) -> Iterator[Study]:
    """Each run folder as a `Study`; a baseline's run (or any other problem) ends the script
    with one line naming `script` and saying that `wanted` runs are needed."""
    for run_dir in run_dirs:
        try:
            run = load_generative_run(run_dir, f"give `{wanted}` runs")
            data = recorded_data(run)
        except DGCError as error:
            raise SystemExit(f"{script}: {error}") from None
        split = validation_split(run, data)
        yield Study(run, run.generator, split.x_val, split.y_val.cpu().numpy(),
                    images_to_tensor(data.x_test, run.cfg.device), data.y_test)
