"""Per-epoch logs that other tools read: `metrics.csv` in the layout of Lightning's CSV logger,
and, when asked, TensorBoard event files.

One row an epoch: `epoch`, `step` (optimiser steps so far), `lr`, `seconds`, every training loss
term as `train_<term>` and every validation metric as `val_<metric>`. As in Lightning, the header
is the sorted union of the keys of every row, a row leaves blank what it lacks (an epoch without
validation), and the file is rewritten whenever a row brings a new key; otherwise a row is
appended as one write. The trainer writes an epoch's row before its checkpoint, and on resume the
file is rewritten from the checkpoint's own history, so a run killed between the two writes, or
resumed from the checkpoint's previous generation, neither repeats nor loses a row. TensorBoard's
scalars carry the same names at the row's `step`; a resumed writer purges every event after the
checkpoint's step (`purge_step`), which TensorBoard's reader then hides."""

from __future__ import annotations

import csv
import io
import numbers
import os
from pathlib import Path
from typing import Any

from dgc.core.errors import DGCError
from dgc.core.io import write_text

SKIPPED = ("trace",)  # history entries that are not scalars (DGC's μ and σ trace)


def row_of(record: dict[str, Any]) -> dict[str, float | int]:
    """An epoch's history record as a metrics.csv row."""
    row: dict[str, float | int] = {}
    for key, value in record.items():
        if key == "val" and isinstance(value, dict):
            row.update({f"val_{name}": number for name, number in value.items()})
        elif key in ("epoch", "step", "lr", "seconds"):
            row[key] = value
        elif key not in SKIPPED and isinstance(value, numbers.Real):
            row[f"train_{key}"] = float(value)
    return row


def tensorboard_writer(folder: Path, purge_step: int | None) -> Any:
    """A TensorBoard SummaryWriter (the optional `tensorboard` package), refused in one line
    where it is missing."""
    check_tensorboard()
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(folder), purge_step=purge_step)


def check_tensorboard() -> None:
    """Refuse --tensorboard before any work where the package is missing."""
    try:
        import tensorboard  # noqa: F401
    except ImportError as error:
        raise DGCError("--tensorboard needs the tensorboard package: pip install "
                       "'dgc-imbalance[tensorboard]' (or pip install tensorboard)") from error


class EpochLog:
    """metrics.csv at `csv_path`, and TensorBoard events under `tensorboard` when given."""

    def __init__(self, csv_path: Path, tensorboard: Path | None = None):
        self.path, self.tensorboard = Path(csv_path), tensorboard
        self.rows: list[dict[str, float | int]] = []
        self.keys: list[str] = []
        self.writer: Any = None

    def start(self, history: list[dict[str, Any]], step: int) -> None:
        """Begin (or, after a resume, continue) the logs from the checkpoint's epoch records and
        optimiser step: metrics.csv is rewritten from them, later TensorBoard events purged."""
        self.rows = [row_of(record) for record in history]
        self.keys = sorted(set().union(*self.rows)) if self.rows else []
        if self.rows:
            self.rewrite()
        else:
            self.path.unlink(missing_ok=True)
        if self.tensorboard is not None and self.writer is None:
            self.writer = tensorboard_writer(self.tensorboard, step + 1 if history else None)

    def write(self, record: dict[str, Any]) -> None:
        """Log one epoch's record."""
        row = row_of(record)
        self.rows.append(row)
        if set(row) - set(self.keys) or not self.path.is_file():
            self.keys = sorted(set(self.keys) | set(row))
            self.rewrite()
        else:
            line = io.StringIO()
            csv.DictWriter(line, fieldnames=self.keys, lineterminator="\n").writerow(row)
            with open(self.path, "a", newline="") as handle:  # one write of a whole line
                handle.write(line.getvalue())
                handle.flush()
                os.fsync(handle.fileno())
        if self.writer is not None:
            step = int(row.get("step", row["epoch"]))
            for key, value in row.items():
                if key != "step":
                    self.writer.add_scalar(key, value, step)
            self.writer.flush()

    def rewrite(self) -> None:
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=self.keys, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        write_text(self.path, text.getvalue())

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
