"""A series of runs (`dgc bench`, `dgc sweep`), each an ordinary run directory: one resumable loop
with one failure policy (a failed run leaves the others to finish, the files are written from the
finished ones, and one error then names the failures)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from tqdm.auto import tqdm

from dgc.config import RunConfig
from dgc.core.errors import DGCError
from dgc.core.io import make_folder
from dgc.core.progress import bar as progress_bar
from dgc.run.folder import RunDir
from dgc.run.train import train_run

T = TypeVar("T")
Failure = tuple[RunConfig, str]  # a run that failed, and its error


def run_series(out: Path, configs: Sequence[RunConfig], write: Callable[[list[Failure]], T],
               desc: str, progress: bool = True,
               log: Callable[[str], None] = tqdm.write) -> T:
    """Train or reuse every run of `configs`, then return `write(failures)`, which writes the
    series' files from the finished runs; raise after it when a run failed."""
    make_folder(out, fix="; choose another --out")
    for cfg in configs:  # a finished run with other settings is refused before anything trains
        folder = RunDir(cfg.out_dir)
        if folder.finished() and (differences := folder.differences(cfg)):
            raise DGCError(f"{cfg.out_dir} was run with other settings "
                           f"({'; '.join(differences)}); use another --out, or delete that run "
                           "to redo it")
    failed: list[Failure] = []
    bar = progress_bar(configs, progress, desc=desc, unit="run")
    for cfg in bar:
        folder = RunDir(cfg.out_dir)
        bar.set_postfix_str(folder.path.name)
        if folder.finished():
            log(f"dgc: {folder.path.name} is finished; reusing its metrics")
            continue
        try:
            train_run(cfg, resume=folder.path.exists(), progress=progress, log=log)
        except DGCError as error:
            log(f"dgc: {folder.path.name} failed: {error}")
            failed.append((cfg, str(error)))
    result = write(failed)
    if failed:
        names = ", ".join(Path(cfg.out_dir).name for cfg, _ in failed)
        raise DGCError(f"{len(failed)} run(s) failed ({names}); the tables in {out} leave them "
                       "out. Fix the cause and rerun the same command to finish them")
    return result
