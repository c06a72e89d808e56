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
