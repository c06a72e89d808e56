"""Worker processes for heavy work: they exit when done, die with their parent, report their peak.

A TensorFlow conversion (tf2onnx, the TFLite converter, onnxruntime's quantizer, QAT) keeps
gigabytes in the process that ran it: allocator arenas and caches that Python cannot return.
Run in a worker, all of it goes back to the system when the worker exits, and the caller (a
notebook kernel on a 12.7 GB Colab runtime, or the CLI) stays small.

Orphans: a worker whose parent is SIGKILLed (the OOM killer, a kernel restart) would otherwise
run on, holding its memory, or block forever on the pipe to its dead parent. On Linux the
kernel sends it SIGKILL the moment the parent dies (``PR_SET_PDEATHSIG``); elsewhere a daemon
thread polls for a new parent process id.

>>> # from skinscan_edge.core.workers import Worker
>>> # value = Worker(pow, 2, 10).result()  # 1024, computed in a fresh process
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
from skinscan_edge.core.progress import plain

#: Peak resident memory (bytes) of each worker that finished in this process, oldest first.
PEAKS: list[int] = []

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(parent_pid: int) -> None:
    """End this process as soon as ``parent_pid``, its parent, ends (call it first thing).

    The kernel's parent-death signal fires when the *thread* that started this process exits;
    every caller here starts workers from the thread that waits for them, so that is the same.
    """
    if sys.platform.startswith("linux"):
        import ctypes  # one libc call: not worth the python-prctl dependency

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            _watch_parent(parent_pid)
    else:
        _watch_parent(parent_pid)
    if os.getppid() != parent_pid:  # died before the line above: no signal will come for it
        os._exit(1)


def _watch_parent(parent_pid: int, every_s: float = 1.0) -> None:
    def watch():
        while os.getppid() == parent_pid:
            threading.Event().wait(every_s)
        os._exit(1)

    threading.Thread(target=watch, name="skinscan-parent-watch", daemon=True).start()


def peak_rss_bytes() -> int | None:
    """This process's peak resident memory (Linux: VmHWM), or None where it cannot be read."""
    try:
        # VmHWM first: it is what reset_peak_rss resets, while ru_maxrss also keeps the peak
        # recorded whenever a thread exited, which may predate the reset.
        with open("/proc/self/status") as f:
            return next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith("VmHWM:"))
    except (OSError, StopIteration):
        pass
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS counts bytes, Linux KiB


def reset_peak_rss() -> bool:
    """Start this process's peak (VmHWM) afresh, so that it measures one stage (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


_to_parent = None  # in a worker: the pipe to its parent, for tell()
_send_lock = threading.Lock()


def tell(text: str) -> None:
    """A progress line for the parent's reporter (in a worker), or stderr (anywhere else)."""
    if _to_parent is None:
        print(plain(text), file=sys.stderr, flush=True)
        return
    with _send_lock:
        _to_parent.send(("say", text))


def peaks_since(n_peaks: int) -> dict:
    """A stage's memory, for its record: this process's peak since :func:`reset_peak_rss` and the
    largest peak among the workers finished since ``PEAKS`` held ``n_peaks`` entries (MiB)."""
    here, workers = peak_rss_bytes(), PEAKS[n_peaks:]
    out = {"peak_rss_mib": round(here / 2**20)} if here else {}
    if workers:
        out["worker_peak_rss_mib"] = round(max(workers) / 2**20)
    return out


def _child(conn, parent_pid: int, fn, args) -> None:
    global _to_parent
    die_with_parent(parent_pid)
    _to_parent = conn
    try:
        out = (True, fn(*args))
    except BaseException as e:  # handed to the parent, which raises it there
        out = (False, e)
    with _send_lock:
        try:
            conn.send(("done", *out, peak_rss_bytes()))
        except Exception as e:  # an exception or result that does not pickle
            conn.send(("done", False, RuntimeError(f"{type(out[1]).__name__}: {out[1]}"[:2000] if not out[0] else
                                                   f"the worker's result could not be sent back: {e}"),
                       peak_rss_bytes()))
    conn.close()


class WorkerDied(RuntimeError):
    """The worker ended without an answer (killed: by the OOM killer, for instance)."""


class Worker:
    """``fn(*args)`` in a fresh spawned process, started at once; ``result()`` waits for it.

    What the worker says with :func:`tell` goes to ``say`` (the caller's reporter), read by a
    thread as it comes, so a long job beside others never blocks on a full pipe.

    Written on ``multiprocessing.Process`` rather than ``ProcessPoolExecutor``: the executor
    waits for a running job when the caller is interrupted and offers no way to kill it, while
    Ctrl-C in a notebook must end a twenty-minute conversion at once. ``fn`` must be importable
    (a module-level function), as for any spawned process.
    """

    def __init__(self, fn, *args, say=None):
        ctx = multiprocessing.get_context("spawn")  # fork would copy TensorFlow's threads and locks
        self._conn, child_conn = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=_child, args=(child_conn, os.getpid(), fn, args),
                                 name=f"skinscan-{getattr(fn, '__name__', 'worker')}")
        self._proc.start()
        child_conn.close()
        self.pid = self._proc.pid
        self.peak_rss: int | None = None
        self._say = say or tell
        self._answer: tuple | None = None
        self._done = threading.Event()
        threading.Thread(target=self._read, name=f"skinscan-worker-{self.pid}", daemon=True).start()

    def _read(self) -> None:
        try:
            while True:
                kind, *rest = self._conn.recv()
                if kind == "say":
                    self._say(rest[0])
                else:
                    self._answer = tuple(rest)
                    return
        except (EOFError, OSError):
            pass  # died, or killed by kill()
        except Exception as e:  # an exception class that pickles but does not unpickle
            self._answer = (False, WorkerDied(f"the worker's answer could not be read: {type(e).__name__}: {e}"), None)
        finally:
            self._done.set()

    def result(self):
        """The function's return value, or its exception raised here; the worker has exited."""
        try:
            while not self._done.wait(0.2):  # short waits: Ctrl-C is seen at once
                pass
            self._proc.join()
        finally:
            self.kill()
        if self._answer is None:
            code = self._proc.exitcode
            why = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
            raise WorkerDied(f"the worker process ended without an answer ({why}"
                             + (", likely out of memory)" if code == -signal.SIGKILL else ")"))
        ok, value, self.peak_rss = self._answer
        if self.peak_rss:
            PEAKS.append(self.peak_rss)
        if not ok:
            raise value
        return value

    def kill(self) -> None:
        """End the worker now if it still runs (the caller was interrupted)."""
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()


def call(fn, *args, say=None):
    """``fn(*args)`` in a worker process; its result, once the worker has exited."""
    return Worker(fn, *args, say=say).result()
