"""One writer per run directory: an exclusive ``fcntl.flock`` on ``RUN/.lock``.

``train``, ``export``, ``evaluate``, ``benchmark``, ``report`` and ``pipeline`` hold it while
they run; ``predict`` only reads and takes none. A second writer is refused at once with one
line that names the holder. The kernel releases the lock when its holder exits, however it
exits, so a ``kill -9`` never leaves a stale lock: the next command runs at once. The lock is
reentrant within one process (``pipeline`` holds it across its stages, which take it again).
Under ``--strategy multi-worker`` only the chief takes it (``train``).

Network filesystems: on Linux, ``flock`` on NFS (v3 with lockd, or v4) is sent to the server as
a POSIX lock, so it excludes writers on other machines too, unless the share is mounted with
``nolock`` or ``local_lock=flock|all``, where it only excludes processes of the same machine.
FUSE mounts of buckets (gcsfuse, s3fs) keep locks local to each machine. Where the filesystem
refuses locks altogether (``ENOLCK``, ``EOPNOTSUPP``), the command goes on without one and says
so in one warning line; it is not refused, because refusing would make such storage unusable.

>>> # with run_lock(Path("runs/demo"), "export"):
>>> #     ...  # write into runs/demo
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

from skinscan_edge.core.errors import SkinscanError
from skinscan_edge.core.files import remove_dead_temporaries

LOCK_NAME = ".lock"
_BUSY = {errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK}

_HOST = socket.gethostname()
_held: dict[str, list] = {}  # resolved run root -> [fd or None, depth]; this process's locks
_guard = threading.Lock()
log = logging.getLogger(__name__)


def holder(root: Path) -> str:
    """'pid N (skinscan-edge CMD, started HH:MM)', as the holder wrote it into the lock file
    ('pid N on HOST (...)' when it runs on another machine)."""
    try:
        lines = (Path(root) / LOCK_NAME).read_text(encoding="utf-8").splitlines()
    except (OSError, ValueError):
        lines = []
    if not lines or not lines[0].startswith("pid "):
        return "another process (it has not written its pid yet)"
    host = lines[1].removeprefix("host ") if len(lines) > 1 else _HOST
    pid, rest = lines[0].split(" (", 1) if " (" in lines[0] else (lines[0], "")
    return f"{pid}{'' if host == _HOST else f' on {host}'}{' (' + rest if rest else ''}"


def refuse_if_in_use(root: str | Path) -> None:
    """Raise the one-line refusal if another process holds RUN's lock (this process's own lock,
    and a run without a lock file, pass). For readers that would otherwise misread a run being
    written, e.g. call a run that is training "interrupted"."""
    root = Path(root)
    if str(root.resolve()) in _held:  # ours; and never a second descriptor while we hold it: on NFS,
        return  # where flock is a POSIX lock, closing any descriptor of the file drops the process's lock
    try:
        fd = os.open(root / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in _BUSY:
            raise _refusal(root) from None
    finally:
        os.close(fd)


def _refusal(root: Path) -> SkinscanError:
    return SkinscanError(f"{root} is in use by {holder(root)}; wait for it or pick another --out")


def _acquire(root: Path, command: str) -> int | None:
    """Open and lock RUN/.lock; returns the descriptor, or None where the filesystem has no locks."""
    path = root / LOCK_NAME
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as e:  # a read-only run: the command itself says what it cannot write
            log.warning("warning: cannot create %s (%s); a second writer is not refused", path, e.strerror)
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in _BUSY:
                raise _refusal(root) from None
            log.warning("warning: %s is on a filesystem without file locks (%s); a second writer is not "
                        "refused there", root, e.strerror)
            return None
        # The file we locked must still be the one at the path (a releasing holder may have
        # removed it between our open and our flock); otherwise lock the new one.
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    info = f"pid {os.getpid()} (skinscan-edge {command}, started {time.strftime('%H:%M')})\nhost {_HOST}\n"
    os.ftruncate(fd, 0)
    os.pwrite(fd, info.encode(), 0)
    return fd


@contextlib.contextmanager
def run_lock(root: str | Path, command: str, create: bool = False) -> Iterator[None]:
    """Hold RUN/.lock for ``command``; refuse with one line if another process holds it.

    ``create``: make RUN if it is missing (train, pipeline); a RUN this call created that holds
    nothing but the lock when it is released (a command that failed before writing anything) is
    removed again. Without it, a missing RUN (or a file in its place) is not locked: the command
    reports that itself."""
    root = Path(root)
    created = create and not root.exists()
    if created:
        root.mkdir(parents=True, exist_ok=True)
    if not root.is_dir():
        yield
        return
    key = str(root.resolve())
    with _guard:
        entry = _held.get(key)
        if entry is None:
            entry = _held[key] = [_acquire(root, command), 0]
            if entry[0] is not None:  # the one writer now: what a killed one left half-written goes
                remove_dead_temporaries(root)
        entry[1] += 1
    try:
        yield
    finally:
        with _guard:
            entry[1] -= 1
            if entry[1] == 0:
                del _held[key]
                if created and {p.name for p in root.iterdir()} <= {LOCK_NAME}:
                    (root / LOCK_NAME).unlink(missing_ok=True)  # still locked: the inode check covers a racer
                    with contextlib.suppress(OSError):
                        root.rmdir()
                if entry[0] is not None:
                    os.close(entry[0])  # releases the flock


def holds_run_lock(command: str) -> Callable:
    """Decorator for a library function whose first argument is an existing run (a RunDir or a
    path): one line on the function, so that the library, not only the CLI, is protected."""

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def locked(run, *args, **kwargs):
            if args and callable(getattr(args[0], "validate", None)):
                args[0].validate()  # a wrong option gets its own line, even while another command writes
            with run_lock(Path(getattr(run, "root", run)), command):  # a RunDir or a path
                return fn(run, *args, **kwargs)

        return locked

    return wrap
