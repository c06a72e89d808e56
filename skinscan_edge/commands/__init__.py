"""Thin typer commands, one module each: parse, build a config, call one API function
(``skinscan_edge.api``), print the result. Importing these modules must not import TensorFlow."""

from __future__ import annotations

import functools

import typer


def user_errors(fn):
    """Turn a SkinscanError into one line on stderr and exit code 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from ..errors import SkinscanError

        try:
            return fn(*args, **kwargs)
        except SkinscanError as e:
            code = getattr(e, "exit_code", 2)
            typer.echo(f"{'error' if code == 2 else 'stopped'}: {e}", err=True)
            raise typer.Exit(code) from None
        except KeyboardInterrupt:
            typer.echo("interrupted: nothing half-written was kept (files are written atomically)", err=True)
            raise typer.Exit(130) from None

    return wrapper


def parse_csv_ints(text: str, flag: str) -> list[int]:
    from ..errors import SkinscanError

    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SkinscanError(f"{flag} takes comma-separated integers, got '{text}'") from None
    if not values or any(v < 1 for v in values):
        raise SkinscanError(f"{flag} values must be positive integers, got '{text}'")
    return values


def reporter():
    """The CLI's progress display: rich, on stderr."""
    from ..progress import RichReporter

    return RichReporter()


__all__ = ["user_errors", "parse_csv_ints", "reporter"]
