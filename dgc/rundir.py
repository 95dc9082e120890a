"""A run directory that protects itself: its files, whether it holds a run, a lock for the
run's life, moving an old run aside, and the check that the data is still what it recorded.

Nothing a user already has is lost or silently replaced: a folder holding a run is refused
unless the command resumes it or asks to overwrite it (which moves the old run aside first), and
two processes never write one run at once.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dgc.errors import DGCError

LOCK = ".dgc.lock"
# Files that only a run writes: one of them makes a folder "hold a run".
RUN_FILES = ("config.json", "checkpoint.pt", "checkpoint.prev.pt", "best.pt", "history.json",
             "metrics.json")
FINISHED = "metrics.json"


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

    def holds_run(self) -> bool:
        return any((self.path / name).exists() for name in RUN_FILES)

    def finished(self) -> bool:
        return (self.path / FINISHED).is_file()

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
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise DGCError(f"cannot create the output directory {self.path}: "
                           f"{error.strerror}; choose another --out") from error
        lock = self.path / LOCK
        taken = False
        try:
            self._take(lock)
            taken = True
            yield
        finally:
            if taken:
                lock.unlink(missing_ok=True)
            if created and not any(self.path.iterdir()):
                self.path.rmdir()

    def _take(self, lock: Path) -> None:
        me = f"{socket.gethostname()} {os.getpid()}\n"
        for _ in range(2):
            try:
                fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                owner = lock.read_text(errors="replace").split() if lock.is_file() else []
                host, pid = (owner + ["?", "?"])[:2]
                if host == socket.gethostname() and pid.isdigit() and not pid_alive(int(pid)):
                    lock.unlink(missing_ok=True)  # stale: its process has died
                    continue
                raise DGCError(f"{self.path} is in use by process {pid} on {host} (lock file "
                               f"{lock}); wait for it to end, or delete the lock file if that "
                               "process is gone") from None
            except OSError as error:
                raise DGCError(f"cannot create the lock file {lock}: {error.strerror}; make "
                               f"{self.path} writable or choose another --out") from error
            with os.fdopen(fd, "w") as handle:
                handle.write(me)
            return
        raise DGCError(f"cannot take the lock file {lock}; delete it and rerun")

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
