"""Errors a user can act on. The CLI prints them as one line, with no traceback."""


class SkinscanError(Exception):
    """A problem with the user's input or run directory; the message says how to fix it."""


class BadImage(SkinscanError):
    """An image file that cannot be used; ``reason`` is a short machine-readable tag."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


def did_you_mean(name: str, valid: list[str], what: str = "name", valid_what: str | None = None) -> str:
    """`unknown export 'x'; valid exports: a, b (did you mean 'a'?)` — the hint ultralytics gets
    right. ``what`` names the kind of thing; ``valid_what`` the list when a plain plural won't do
    (``class`` -> ``labels``)."""
    import difflib

    close = difflib.get_close_matches(name, valid, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    plural = valid_what or (what + ("es" if what.endswith("s") else "s"))
    return f"unknown {what} '{name}'; valid {plural}: {', '.join(valid)}{hint}"


class RunFileError(SkinscanError, ValueError):
    """A run file that does not parse or does not match its schema (a ValueError too, so that
    ``read_json_or_none`` still treats it as damaged)."""


#: errno -> what to do about it; the one line that replaces an OSError's traceback.
_OS_FIXES = {
    "ENOSPC": "the disk is full; free some space and run the command again",
    "EDQUOT": "the disk quota is used up; free some space and run the command again",
    "EFBIG": "the file is larger than this system allows (see `ulimit -f`); raise the limit or write elsewhere",
    "EIO": "the disk reported an input/output error; check the disk (dmesg), then run the command again",
    "EACCES": "permission denied; make it writable (or readable) for this user, or choose another folder",
    "EPERM": "operation not permitted; make it writable for this user, or choose another folder",
    "EROFS": "the file system is read-only; choose a folder on a writable disk",
}


def as_user_error(exc: BaseException) -> SkinscanError | None:
    """The one-line SkinscanError for an error a user can act on but the code did not foresee
    (a full disk, a read-only folder, a hung or failed subprocess, a damaged JSON file), or None
    for a bug, whose traceback must stay visible."""
    import errno
    import json
    import subprocess

    if isinstance(exc, SkinscanError):
        return exc
    if isinstance(exc, OSError) and exc.errno is not None:
        name = errno.errorcode.get(exc.errno, "")
        if name in _OS_FIXES:
            import re

            said = " ".join(str(exc.strerror or name).split())  # h5py's are several lines long
            named = re.search(r"filename = '([^']+)'", said)  # h5py names the file only in its text
            where = " ".join(str(f) for f in (exc.filename, exc.filename2) if f) or (named and named[1]) or "a file"
            short = said.split(" (", 1)[0][:120]
            return SkinscanError(f"{short} ({name}) on {where}: {_OS_FIXES[name]}")
    if isinstance(exc, subprocess.TimeoutExpired):
        return SkinscanError(f"`{_command(exc.cmd)}` did not finish within {exc.timeout:.0f} s; "
                             f"check that it is not waiting on a device or the network, then retry")
    if isinstance(exc, subprocess.CalledProcessError):
        said = ((exc.stderr or exc.output or b"") if not isinstance(exc.stderr, str) else exc.stderr)
        said = said.decode("utf-8", "replace") if isinstance(said, bytes) else said
        last = (said.strip().splitlines() or ["no output"])[-1]
        return SkinscanError(f"`{_command(exc.cmd)}` exited {exc.returncode} ({last[-200:]})")
    if isinstance(exc, json.JSONDecodeError):
        return RunFileError(f"a JSON file does not parse (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
                            f"re-run the command that wrote it")
    return None


def _command(cmd) -> str:
    return " ".join(map(str, cmd)) if isinstance(cmd, (list, tuple)) else str(cmd)


def user_facing(fn):
    """Decorator for the Python API: errors a user can act on arrive as one SkinscanError."""
    import functools
    import subprocess

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (OSError, ValueError, subprocess.SubprocessError) as e:
            user = as_user_error(e)
            if user is None or user is e:
                raise
            raise user from e

    return wrapper
