"""Thin typer commands, one module each: parse, build a config, call one API function
(``skinscan_edge.api``), print the result. Importing these modules must not import TensorFlow."""

from __future__ import annotations

import functools

import typer
from skinscan_edge.core.errors import as_user_error, SkinscanError
from skinscan_edge.core.progress import RichReporter
from skinscan_edge.core.tf import verbose


def user_errors(fn):
    """The error boundary: a SkinscanError, and an error a user can act on that the code did not
    foresee (a full disk, a read-only folder, a hung subprocess, a damaged JSON file:
    ``errors.as_user_error``), become one line on stderr and exit code 2; ``--verbose`` adds the
    traceback. Anything else is a bug and keeps its traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import subprocess

        try:
            return fn(*args, **kwargs)
        except (SkinscanError, OSError, ValueError, subprocess.SubprocessError) as e:
            user = as_user_error(e)
            if user is None:
                raise

            if verbose():
                import traceback

                traceback.print_exception(e)
            code = getattr(user, "exit_code", 2)
            typer.echo(f"{'error' if code == 2 else 'stopped'}: {user}", err=True)
            raise typer.Exit(code) from None
        except KeyboardInterrupt:
            typer.echo("interrupted: nothing half-written was kept (files are written atomically)", err=True)
            raise typer.Exit(130) from None

    return wrapper


def parse_csv_ints(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SkinscanError(f"{flag} takes comma-separated integers, got '{text}'") from None
    if not values or any(v < 1 for v in values):
        raise SkinscanError(f"{flag} values must be positive integers, got '{text}'")
    return values


def reporter():
    """The CLI's progress display: rich, on stderr."""
    return RichReporter()


__all__ = ["user_errors", "parse_csv_ints", "reporter"]
