"""A run directory that protects itself, so that nothing a user already has is lost or silently
replaced: a folder holding a run is refused unless the command resumes it or asks to overwrite
it (which moves the old run aside first), two processes never write one run at once (a lock for
the run's life), and a run is not resumed or reused with settings or data other than it recorded."""

from __future__ import annotations

import os
import socket
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dgc.config import RunConfig, as_asked, flatten, validate
from dgc.core.errors import DGCError
from dgc.core.io import CheckpointFiles, make_folder, read_json, write_error
from dgc.data.registry import DATASETS

LOCK = ".dgc.lock"
CONFIG = "config.json"  # the settings, the environment and facts about the data
HISTORY = "history.json"
EPOCHS = "metrics.csv"  # one row an epoch, written as the run trains (dgc.train.logs)
TENSORBOARD = "tensorboard"  # TensorBoard's event files, with --tensorboard
METRICS = "metrics.json"  # the test metrics, written last: the run is finished
PREDICTIONS = "predictions.npz"  # the test set's labels, predicted labels and probabilities
PARTIAL_PREDICTIONS = "predictions.partial.npz"  # the test chunks predicted so far, until done
CHECKPOINT = "checkpoint.pt"  # everything needed to resume
PREVIOUS = "checkpoint.prev.pt"  # the generation before CHECKPOINT, should that be damaged
BEST = "best.pt"  # the weights that are evaluated
# Files that only a run writes: one of them makes a folder "hold a run".
RUN_FILES = (CONFIG, CHECKPOINT, PREVIOUS, BEST, HISTORY, METRICS, EPOCHS)
# Keys of config.json that record facts about the run rather than settings.
RUN_FACTS = ("environment", "resumed_in", "split_sha256", "test_sha256", "n_params", "data")
FINGERPRINTS = ("split_sha256", "test_sha256")

# What may differ between the settings a run recorded and a new request for it: where and how
# fast it runs, never what it computes. Resuming continues the run on this machine, so its
# device must stay (half a run on each would mix two devices' numbers), but it may be given more
# epochs unless its schedule depends on the total. A series counts a finished run whatever
# device trained it (its table says which), but the epochs are part of that run's result, and
# the folder of the user's own data is that data.
RESUME_FREE = frozenset({"out", "data_dir", "threads", "train.epochs"})
SERIES_FREE = frozenset({"out", "data_dir", "threads", "device"})
EPOCH_DEPENDENT_SCHEDULES = ("cosine", "manual_smooth", "manual_smooth_released")


def changes(old: dict[str, Any], new: dict[str, Any], free: Collection[str]) -> list[str]:
    """'name: old -> new' for each setting outside `free` in which two config dicts differ."""
    a, b = flatten(old), flatten(new)
    return [f"{key}: {a.get(key)!r} -> {b.get(key)!r}" for key in sorted(set(a) | set(b))
            if key not in free and a.get(key) != b.get(key)]


def check_resume(old: dict[str, Any], new: dict[str, Any], whose: str) -> None:
    """Refuse to resume a run whose recorded settings (`whose`) differ in a result-changing one."""
    # these schedules' learning rate, and deferred re-weighting's first epoch, depend on the
    # total number of epochs
    settings = flatten(new)
    epochs_fixed = (settings.get("train.schedule") in EPOCH_DEPENDENT_SCHEDULES
                    or (settings.get("baseline.weighting", "none") != "none"
                        and settings.get("baseline.weights_from", 0) > 0))
    free = RESUME_FREE - {"train.epochs"} if epochs_fixed else RESUME_FREE
    if differences := changes(old, new, free):
        raise DGCError(f"cannot resume: the configuration differs from {whose} in "
                       + "; ".join(differences) + ". Use the same settings, or another --out")


def check_fingerprints(recorded: dict[str, str | None], found: dict[str, str],
                       where: Path, source: str) -> None:
    """Refuse data whose fingerprints differ from those a run recorded (old runs lack some)."""
    changed = [name for name, value in recorded.items()
               if value is not None and found.get(name) != value]
    if changed:
        parts = " and ".join({"split_sha256": "the training split",
                              "test_sha256": "the test set"}.get(n, n) for n in changed)
        verb = "differs" if len(changed) == 1 else "differ"
        raise DGCError(f"the data has changed since {where} was trained: {parts} of {source} "
                       f"{verb} from what the run recorded; use the data it was trained on, or "
                       "train a new run")


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


class RunDir:
    """The folder of one run (`dgc train --out`), as the commands that use it see it."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def files(self, tensorboard: bool = False) -> CheckpointFiles:
        """Where the run's trainer saves its checkpoints, best weights and per-epoch logs."""
        return CheckpointFiles(self.path / CHECKPOINT, self.path / PREVIOUS, self.path / BEST,
                               self.path / EPOCHS,
                               self.path / TENSORBOARD if tensorboard else None)

    def holds_run(self) -> bool:
        return any((self.path / name).exists() for name in RUN_FILES)

    def finished(self) -> bool:
        return (self.path / METRICS).is_file()

    def metrics(self) -> dict[str, Any]:
        return read_json(self.path / METRICS)

    def config(self) -> dict[str, Any]:
        """The run's config.json, which must be a JSON object."""
        raw = read_json(self.path / CONFIG)
        if not isinstance(raw, dict):
            raise DGCError(f"{self.path / CONFIG} is not a dgc run configuration (it holds a "
                           f"JSON {type(raw).__name__}, not an object); restore it or train a "
                           "new run")
        return raw

    def settings(self, raw: dict[str, Any] | None = None) -> RunConfig:
        """The settings in config.json (`raw`, if already read), checked like the command line's."""
        raw = raw if raw is not None else self.config()
        try:
            cfg = RunConfig.from_dict({k: v for k, v in raw.items() if k not in RUN_FACTS})
            validate(cfg)
        except (KeyError, TypeError, AttributeError, DGCError) as error:
            detail = f"no {error} section or setting" if isinstance(error, KeyError) else error
            raise DGCError(f"{self.path / CONFIG} holds settings this version cannot use "
                           f"({detail}); restore it or train a new run") from error
        return cfg

    def fingerprints(self, raw: dict[str, Any] | None = None) -> dict[str, str | None]:
        """What the run recorded of its data (old runs lack some); `raw`: config.json, if read."""
        raw = raw if raw is not None else self.config()
        return {key: raw.get(key) for key in FINGERPRINTS}

    def differences(self, cfg: RunConfig) -> list[str]:
        """'name: old -> new' for each setting the finished run differs in from `cfg`, as a
        series sees it (`SERIES_FREE`; the epochs `train.steps` derived are compared as asked)."""
        old, new = (as_asked(c.to_dict()) for c in (self.settings(), cfg))
        if not DATASETS[cfg.exp].user_data:
            return changes(old, new, SERIES_FREE)
        # the user's data is its folder or file, however the path is spelled
        for settings in (old, new):
            if settings.get("data_dir"):
                settings["data_dir"] = str(Path(settings["data_dir"]).expanduser().resolve())
        return changes(old, new, SERIES_FREE - {"data_dir"})

    def check_resumable(self, cfg: RunConfig) -> None:
        """Refuse, before any data is loaded, to resume a run recorded with other settings
        (with `train.steps`, the recorded epochs were derived from it: compare what was asked)."""
        if (self.path / CONFIG).is_file():
            check_resume(as_asked(self.settings().to_dict()), as_asked(cfg.to_dict()), "the run's")

    def refuse_existing(self, resume: bool, overwrite: bool) -> None:
        """A folder holding a run is only reused on purpose: `--resume` or `--overwrite`."""
        if resume and overwrite:
            raise DGCError("--resume continues the run in the folder and --overwrite moves it "
                           "aside; give one of them")
        if self.holds_run() and not (resume or overwrite):
            state = "a finished run" if self.finished() else "an unfinished run"
            raise DGCError(f"{self.path} holds {state}; continue it with --resume, move it "
                           "aside and start again with --overwrite, or choose another --out")

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold `.dgc.lock` (this process's host and id) while the body runs; a lock left by a
        dead process on this host is taken over. Creates the folder, and removes it again if
        it is still empty afterwards (a refused command leaves nothing behind)."""
        created = not self.path.exists()
        make_folder(self.path, "output directory", "; choose another --out")
        lock = self.path / LOCK
        taken = False
        try:
            self._take(lock)
            taken = True
            yield
        finally:
            if taken:
                lock.unlink(missing_ok=True)
            if created and self.path.is_dir() and not any(self.path.iterdir()):
                self.path.rmdir()

    def _take(self, lock: Path) -> None:
        me = f"{socket.gethostname()} {os.getpid()}\n"
        for _ in range(2):
            try:
                fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                text = lock.read_text(errors="replace") if lock.is_file() else ""
                host, pid = (text.split() + ["?", "?"])[:2]
                if host == socket.gethostname() and pid.isdigit() and not pid_alive(int(pid)):
                    self._remove_stale(lock, text)  # its process has died
                    continue
                raise DGCError(f"{self.path} is in use by process {pid} on {host} (lock file "
                               f"{lock}); wait for it to end, or delete the lock file if that "
                               "process is gone") from None
            except OSError as error:
                raise DGCError(f"cannot create the lock file {lock}: {error.strerror}; make "
                               f"{self.path} writable or choose another --out") from error
            try:
                with os.fdopen(fd, "w") as handle:
                    handle.write(me)
            except OSError as error:  # a full disk: no empty lock left behind
                lock.unlink(missing_ok=True)
                raise write_error(lock, error) from error
            return
        raise DGCError(f"cannot take the lock file {lock}; delete it and rerun")

    def _remove_stale(self, lock: Path, text: str) -> None:
        """Delete a dead process's lock file, unless another process has taken it over since
        it was read: takeovers of a folder hold an flock on the folder itself, so two commands
        that found the same stale lock cannot each delete it after the other replaced it."""
        import fcntl

        folder = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(folder, fcntl.LOCK_EX)
            if lock.is_file() and lock.read_text(errors="replace") == text:
                lock.unlink()
        finally:
            os.close(folder)  # releases the flock

    def move_aside(self) -> Path:
        """Move the run's files (everything but the lock) into a new sibling folder
        `NAME.old-K`, so `--overwrite` starts empty without losing the old run."""
        k = 1
        while (aside := self.path.with_name(f"{self.path.name}.old-{k}")).exists():
            k += 1
        try:
            aside.mkdir()
            for entry in self.path.iterdir():
                if entry.name != LOCK:
                    os.replace(entry, aside / entry.name)
        except OSError as error:
            raise DGCError(f"could not move the old run in {self.path} aside to {aside}: "
                           f"{error.strerror}; move it yourself, then rerun") from error
        return aside
