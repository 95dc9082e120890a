"""Safe files: atomic writes of JSON, text and checkpoints, and checked checkpoint loading."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from dgc.errors import DGCError


def atomic_write(path: str | Path, write: Any, mode: str = "wb") -> None:
    """Write through `write(file)` into a temporary file beside `path`, flush, then rename.

    A crash or a full disk leaves either the old file or the new one, never half of one.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as error:
        Path(tmp).unlink(missing_ok=True)
        raise DGCError(f"could not write {path}: {error.strerror or error}") from error
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, data: Any) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(data, indent=2) + "\n"), mode="w")


def write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text), mode="w")


def read_json(path: str | Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError as error:
        raise DGCError(f"{path} does not exist") from error
    except (OSError, json.JSONDecodeError) as error:
        raise DGCError(f"{path} is not readable JSON: {error}") from error


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load with `weights_only=True`; a missing, truncated or foreign file is a DGCError."""
    path = Path(path)
    if not path.is_file():
        raise DGCError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for damaged files
        raise DGCError(f"checkpoint {path} is damaged or not a dgc checkpoint ({error}); "
                       "delete it to start again, or restore it from a backup") from error
    if not isinstance(state, dict) or "model" not in state:
        raise DGCError(f"checkpoint {path} is not a dgc checkpoint (no model weights in it)")
    return state
