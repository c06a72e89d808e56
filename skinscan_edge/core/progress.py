"""One progress interface for the whole library.

Library functions report through a :class:`Reporter` and never print: ``message`` for a log
line, ``advance`` for a bar (a task with a known total), ``row`` for a finished result (one
benchmark row, one export file, one pipeline stage). The CLI renders it with rich
(:class:`RichReporter`); a notebook gets the same bars, since rich renders in Jupyter (with
ipywidgets; plain lines without it, :func:`default_reporter`); a caller that wants silence
passes nothing (:class:`Reporter` itself does nothing).

>>> # from skinscan_edge.core.progress import Reporter
>>> # class Collect(Reporter):
>>> #     def message(self, text, level="info"): print(level, text)
"""

from __future__ import annotations

import contextlib
import re

#: rich markup such as ``[bold]`` or ``[/]``; stripped for reporters that print plain text.
_MARKUP = re.compile(r"\[/?[a-z ]*\]")


def plain(text: str) -> str:
    """``text`` without rich markup (for logs, notebooks without rich, exceptions)."""
    return _MARKUP.sub("", text)


class Reporter:
    """The callbacks a long-running library function makes. Every method is optional: this base
    class ignores everything, so ``Reporter()`` means "silent".

    Levels of ``message``: ``info``, ``ok`` (a step succeeded), ``warn`` and ``error`` (a step
    failed and the work goes on). Text may carry rich markup; :func:`plain` strips it.
    """

    def message(self, text: str, level: str = "info") -> None:
        """One log line."""

    def advance(self, task: str, done: int, total: int | None) -> None:
        """Progress of ``task``: ``done`` of ``total`` units (None: unknown total)."""

    def row(self, kind: str, row: dict) -> None:
        """A finished result: ``kind`` is ``benchmark``, ``export``, ``stage`` or ``evaluate``."""

    def stage(self, name: str, index: int, total: int) -> None:
        """A pipeline stage starts."""

    @contextlib.contextmanager
    def bars(self, transient: bool = True):
        """Groups the ``advance`` calls that belong together (one evaluate, one scan); transient
        bars vanish when the group ends."""
        yield


SILENT = Reporter()

_STYLES = {"ok": "green", "warn": "yellow", "error": "red"}


class RichReporter(Reporter):
    """Renders to a rich Console (stderr by default): lines, progress bars, rules per stage."""

    def __init__(self, console=None, verbose: bool = False):
        if console is None:
            from rich.console import Console

            console = Console(stderr=True, soft_wrap=True)  # whole lines in CI logs and pipes
        self.console = console
        self.verbose = verbose
        self._progress = None
        self._tasks: dict[str, int] = {}

    def message(self, text: str, level: str = "info") -> None:
        style = _STYLES.get(level)
        target = self._progress.console if self._progress is not None else self.console
        target.print(f"[{style}]{text}[/]" if style else text, highlight=False)

    def stage(self, name: str, index: int, total: int) -> None:
        self.console.rule(f"[bold]stage {index}/{total}: {name}")

    @contextlib.contextmanager
    def bars(self, transient: bool = True):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        if self._progress is not None:  # nested: the outer group's bars are shared
            yield
            return
        columns = [TextColumn("{task.description:<16}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
        with Progress(*columns, console=self.console, transient=transient) as bar:
            self._progress, self._tasks = bar, {}
            try:
                yield
            finally:
                self._progress = None

    def advance(self, task: str, done: int, total: int | None) -> None:
        if self._progress is None:
            return
        if task not in self._tasks:
            self._tasks[task] = self._progress.add_task(task, total=total)
        self._progress.update(self._tasks[task], completed=done, total=total)

    def row(self, kind: str, row: dict) -> None:
        if kind == "benchmark":
            self.message(_benchmark_line(row))


def _benchmark_line(row: dict) -> str:
    what = (f"skipped: {row['skipped']}" if "skipped" in row else f"error: {row['error']}"
            if "error" in row else f"p50 {row['latency_p50_ms']:.1f} ms" if row.get("latency_p50_ms")
            else f"mean {row.get('latency_mean_ms', float('nan')):.1f} ms")
    return f"{row['model']:>16} {row['device']} x{row['threads']}: {what}"


class PlainReporter(Reporter):
    """Plain lines on stdout: a notebook without ipywidgets, where rich's live bars cannot draw
    and would only warn. A bar becomes a line at its end and at most one per ``every_s``."""

    def __init__(self, file=None, every_s: float = 15.0):
        self.file, self.every_s = file, every_s
        self._last: dict[str, float] = {}

    def _print(self, text: str) -> None:
        import sys

        print(text, file=self.file or sys.stdout, flush=True)

    def message(self, text: str, level: str = "info") -> None:
        self._print(plain(text))

    def stage(self, name: str, index: int, total: int) -> None:
        self._print(f"── stage {index}/{total}: {name} ──")

    def advance(self, task: str, done: int, total: int | None) -> None:
        import time

        now, finished = time.monotonic(), total is not None and done >= total
        if finished or now - self._last.setdefault(task, now) >= self.every_s:
            self._last[task] = now
            self._print(f"{task}: {done}/{total}" if total else f"{task}: {done}")
        if finished:
            self._last.pop(task, None)

    def row(self, kind: str, row: dict) -> None:
        if kind == "benchmark":
            self.message(_benchmark_line(row))


def default_reporter() -> Reporter:
    """Rich bars in a terminal and in Jupyter with ipywidgets; plain lines in Jupyter without it
    (rich's live display there needs ipywidgets, and warns once per bar without it)."""
    import importlib.util

    from rich.console import Console

    if Console().is_jupyter and importlib.util.find_spec("ipywidgets") is None:
        return PlainReporter()
    return RichReporter()


def reporter_or_silent(reporter: Reporter | None) -> Reporter:
    return SILENT if reporter is None else reporter
