"""Placeholder: being written now. Replaced by the real command."""

import typer


def command() -> None:
    """Not written yet."""
    raise typer.Exit(1)
