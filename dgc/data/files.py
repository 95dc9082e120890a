"""Finding a dataset's files, downloading them, and opening numpy files without pickles."""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.request
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dgc.core.errors import DGCError
from dgc.core.io import atomic_write
from dgc.data.base import PathLike

log = logging.getLogger(__name__)

DOWNLOAD_TIMEOUT_S = 60.0


def candidate_dirs(name: str, data_dir: PathLike | None, extra: Sequence[Path] = ()) -> list[Path]:
    """Directories searched for a dataset, in priority order.

    A folder the user names is authoritative: it and its `<name>` subfolder are the only
    places searched, so a damaged or missing copy there is never replaced by another one.
    """
    if data_dir is not None:
        named = Path(data_dir).expanduser()
        return [named, named / name]
    dirs: list[Path] = []
    env = os.environ.get("DGC_DATA")
    if env:
        dirs.append(Path(env).expanduser() / name)
    dirs.append(Path("data", name))
    dirs.extend(extra)
    return dirs


def find_dir(candidates: Sequence[Path], files: Sequence[str]) -> Path | None:
    for directory in candidates:
        if all((directory / f).exists() for f in files):
            return directory
    return None


def show_dirs(dirs: Sequence[Path]) -> str:
    return ", ".join(str(d.absolute()) for d in dirs)


def download(url: str, dest: Path, md5: str) -> None:
    """Fetch url (a few MB) and write it to dest only once its MD5 matches, atomically, so a
    bad download never looks like data."""
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
        payload = response.read()
    digest = hashlib.md5(payload, usedforsecurity=False).hexdigest()
    if digest != md5:
        raise DGCError(
            f"download of {url} is corrupt: MD5 {digest} does not match the published {md5}; "
            f"nothing was saved, try again or fetch {dest.name} by hand"
        )
    atomic_write(dest, lambda out: out.write(payload))


# How .npz (zip, possibly empty) and .npy files start; np.load takes anything else for a pickle.
NUMPY_MAGICS = (b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY")


def is_numpy_file(path: Path) -> bool:
    """Whether `path` starts like an .npz or .npy file (it must exist and be readable)."""
    with path.open("rb") as handle:
        return handle.read(6).startswith(NUMPY_MAGICS)


# What numpy and zipfile raise for a damaged .npz: a bad deflate stream (zlib.error), an unknown
# compression method (NotImplementedError), a stray encryption flag (RuntimeError), a size field
# asking for more memory than there is (MemoryError), besides the usual types.
_ARCHIVE_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error,
                   NotImplementedError, RuntimeError, MemoryError)


def open_numpy(path: Path, hint: str) -> np.ndarray | np.lib.npyio.NpzFile:
    """np.load of an .npy or .npz file without pickles; a file that is neither, or is damaged,
    is a DGCError naming it (`hint` says how to save a good one)."""
    try:
        loaded = np.load(path, allow_pickle=False) if is_numpy_file(path) else None
    except _ARCHIVE_ERRORS as exc:
        raise DGCError(f"cannot read {path} as an .npz archive or .npy file: {exc}") from exc
    if loaded is None:
        raise DGCError(f"cannot read {path}: it is neither an .npz archive nor an .npy file; "
                       f"{hint}")
    return loaded


def read_member(npz: np.lib.npyio.NpzFile, key: str, path: Path) -> np.ndarray:
    """One array of an open .npz; a damaged member is a DGCError naming the file."""
    try:
        member = npz[key]
    except _ARCHIVE_ERRORS as exc:
        raise DGCError(f"cannot read the array {key!r} in {path}: {exc}") from exc
    if not isinstance(member, np.ndarray):  # numpy hands a zip's non-.npy member over as bytes
        raise DGCError(f"{path}: {key!r} is not a numpy array (is this a zip of other files?); "
                       "save your arrays with np.savez")
    return member


def write_cache(path: Path, arrays: dict[str, np.ndarray], fingerprint: str) -> None:
    """Save decoded arrays with the fingerprint of their sources, atomically; an unwritable
    place just means no cache."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # numpy's stub types **kwds as if they could fill savez's bool `allow_pickle`
        atomic_write(path, lambda out: np.savez(
            out, fingerprint=np.array(fingerprint), **arrays))  # type: ignore[arg-type]
    except (OSError, DGCError) as exc:  # atomic_write reports a failed write as a DGCError
        log.info("not caching at %s: %s", path, exc)


# The arrays of a `RawData`, as a cache holds them.
ARRAYS = ("x_train", "y_train", "x_test", "y_test")


def read_cache(path: Path, fingerprint: str | None,
               keys: Sequence[str] = ARRAYS) -> dict[str, np.ndarray] | None:
    """The arrays `keys` of a cache `write_cache` saved for `fingerprint` (None: for any); None
    when it is missing, damaged in any way or was saved for other sources, which means decoding
    again (the zip's CRC-32s cover every array)."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):  # an .npy, not a cache
            return None
        with loaded as cache:
            if fingerprint is not None and str(cache["fingerprint"]) != fingerprint:
                return None
            return {key: cache[key] for key in keys}
    except (KeyError, *_ARCHIVE_ERRORS):
        return None
