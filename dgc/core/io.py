"""Safe files: atomic writes of JSON, text and checkpoints, and checked checkpoint loading.

A checkpoint can keep its previous generation beside it, so a damaged newest file still leaves one
to resume from."""

from __future__ import annotations

import errno
import io
import json
import os
import pickle
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dgc.core.errors import DGCError

if TYPE_CHECKING:
    import torch


def atomic_write(path: str | Path, write: Any, mode: str = "wb",
                 previous: str | Path | None = None) -> None:
    """Write through `write(file)` into a temporary file beside `path`, flush, then rename: a
    crash, Ctrl-C or a full disk leaves either the old file or the new one, never half of one,
    and no temporary file. With `previous`, the old `path` is renamed to it first."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise write_error(path, error) from error
    try:
        with os.fdopen(fd, mode) as handle:
            os.fchmod(handle.fileno(), 0o666 & ~current_umask())  # mkstemp's is 0600
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        if previous is not None and path.is_file():
            os.replace(path, previous)
        os.replace(tmp, path)
    except OSError as error:
        Path(tmp).unlink(missing_ok=True)
        raise write_error(path, error) from error
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def staged(folder: Path) -> Iterator[Path]:
    """A hidden temporary folder in `folder` for files that must appear together: once the body
    has finished, what it wrote there replaces the files and folders of the same names in
    `folder` (folders first, then files). A body that fails (a full disk, Ctrl-C) changes
    nothing in `folder`, and the temporary folder goes either way."""
    try:
        stage = Path(tempfile.mkdtemp(prefix=".staged.", suffix=".tmp", dir=folder))
    except OSError as error:
        raise write_error(folder / ".staged", error) from error
    try:
        yield stage
        for entry in sorted(stage.iterdir(), key=lambda p: (p.is_file(), p.name)):
            target, old = folder / entry.name, stage / f".{entry.name}.old"
            if target.is_dir():  # a folder is not renamed over another: swap them
                os.replace(target, old)
            try:
                os.replace(entry, target)
            except OSError:
                if old.exists():
                    os.replace(old, target)
                raise
    except OSError as error:
        raise write_error(folder, error) from error
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def make_folder(path: Path, what: str = "folder", fix: str = "") -> None:
    """Create `path` and its parents; a failure is one line naming the `what` and the `fix`."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DGCError(f"cannot create the {what} {path}: {error.strerror}{fix}") from error


def current_umask() -> int:
    """The process's umask, which the files written here respect like any other file."""
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def write_error(path: Path, error: OSError) -> DGCError:
    """The one-line report of a failed write, with the likely fix."""
    if error.errno == errno.ENOSPC:
        fix = f"free some space on the disk holding {path.parent}"
    elif error.errno == errno.ENOENT:
        fix = (f"{path.parent} is gone (deleted or moved while dgc ran?); restore it or choose "
               "another output location")
    elif error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = f"make {path.parent} writable or choose another output location"
    else:
        fix = f"check that {path.parent} exists and is writable"
    return DGCError(f"could not write {path}: {error.strerror or error}; any earlier version of "
                    f"it is unchanged. To fix: {fix}, then rerun")


def write_json(path: str | Path, data: Any) -> Path:
    """Write `data` as indented JSON; returns the path, which the commands report."""
    return write_text(path, json.dumps(data, indent=2) + "\n")


def write_text(path: str | Path, text: str) -> Path:
    atomic_write(path, lambda f: f.write(text), mode="w")
    return Path(path)


def read_json(path: str | Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError as error:
        raise DGCError(f"{path} does not exist") from error
    except (OSError, json.JSONDecodeError) as error:
        raise DGCError(f"{path} is not readable JSON: {error}") from error


@dataclass(frozen=True)
class CheckpointFiles:
    """A trainer's files: the resumable checkpoint, its previous generation and the best weights;
    the per-epoch log (`dgc.train.logs`) and, when asked, the TensorBoard folder."""

    latest: Path
    previous: Path
    best: Path
    epochs: Path | None = None
    tensorboard: Path | None = None


def save_checkpoint(path: str | Path, state: dict[str, Any],
                    previous: str | Path | None = None) -> None:
    """Atomically `torch.save` `state`; with `previous`, the old file becomes that one (torch
    is imported here, so the modules that only read and write JSON stay light). It is saved in
    memory first: torch reports a failed write to a file (a full disk) as a RuntimeError of
    its own, which would escape as a traceback."""
    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write(path, lambda f: f.write(buffer.getbuffer()), previous=previous)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load with `weights_only=True`; a missing, truncated, corrupted or foreign file is a DGCError.
    torch does not check its archive's CRC-32s, so a flipped bit in the weights would load
    silently: the archive is tested first."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise DGCError(f"checkpoint {path} does not exist")
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
        state = torch.load(path, map_location="cpu", weights_only=True) if bad is None else None
    except pickle.UnpicklingError as error:  # torch's weights-only refusal, many lines long
        raise DGCError(f"checkpoint {path} holds Python objects besides tensors and numbers, "
                       f"which dgc does not load ({unpickling_reason(error)}); use a checkpoint "
                       "written by dgc") from error
    except Exception as error:  # zipfile and torch raise many types for damaged files
        raise damaged(path, one_line(str(error))) from error
    if bad is not None:
        raise damaged(path, f"its part {bad} fails its CRC-32 check")
    if not isinstance(state, dict) or "model" not in state:
        raise DGCError(f"checkpoint {path} is not a dgc checkpoint (no model weights in it)")
    return state


def one_line(text: str) -> str:
    """The first non-empty line of an error message."""
    return next((line.strip() for line in text.splitlines() if line.strip()), text)


def unpickling_reason(error: Exception) -> str:
    """The line of torch's weights-only refusal that names what was refused."""
    lines = [line.strip() for line in str(error).splitlines()]
    return next((line for line in lines if "Unsupported global" in line), one_line(str(error)))


def load_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor],
                 path: str | Path) -> None:
    """Load a checkpoint's weights into `model`; another architecture's weights are one line
    naming the file and the first mismatch (torch's own message runs to many lines)."""
    mine = model.state_dict()
    missing, unexpected = sorted(set(mine) - set(weights)), sorted(set(weights) - set(mine))
    shapes = [f"{k} {tuple(weights[k].shape)} instead of {tuple(mine[k].shape)}"
              for k in mine if k in weights and weights[k].shape != mine[k].shape]
    problems = [f"{len(names)} {what} ({names[0]}, ...)" for names, what in
                ((missing, "missing weights"), (unexpected, "unexpected weights"),
                 (shapes, "weights of other shapes")) if names]
    if problems:
        raise DGCError(f"{path} holds the weights of another architecture than its "
                       f"configuration describes: {'; '.join(problems)}; keep a run's files "
                       "together, or train a new run")
    model.load_state_dict(weights)


def damaged(path: Path, reason: str) -> DGCError:
    return DGCError(f"checkpoint {path} is damaged or not a dgc checkpoint ({reason}); "
                    "delete it to start again, or restore it from a backup")


def load_newest_checkpoint(path: Path, previous: Path,
                           log: Callable[[str], None]) -> dict[str, Any] | None:
    """`path`, or `previous` when `path` is missing or damaged; None when neither exists. A
    damaged `path` is renamed to `<name>.damaged`, so that the next save does not rotate it over
    the good previous generation."""
    if not path.exists() and not previous.exists():
        return None
    try:
        return load_checkpoint(path)
    except DGCError:
        if not previous.exists():
            raise
    try:
        state = load_checkpoint(previous)
    except DGCError as error:
        raise DGCError(f"neither {path.name} nor its previous generation {previous.name} in "
                       f"{path.parent} can be loaded ({error})") from error
    problem = "it is missing"
    if path.exists():
        aside = path.with_name(path.name + ".damaged")
        try:
            os.replace(path, aside)
        except OSError as error:
            raise write_error(aside, error) from error
        problem = f"it is damaged or not a dgc checkpoint; moved it to {aside.name}"
    log(f"dgc: cannot load {path} ({problem}). Resuming from the previous checkpoint "
        f"{previous.name} (epoch {state.get('epoch')})")
    return state
