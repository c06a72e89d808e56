"""`--help` renders whole sentences at any terminal width: rich keeps a docstring's hard line
breaks, so a paragraph wrapped by hand in the source breaks mid-sentence on screen ("... SHA-256
verified), so" / "running an interrupted export ..."). Every line break in a paragraph of the
description must be one that the terminal's width forced."""

from __future__ import annotations

import pytest

COMMANDS = ["demo-data", "train", "export", "evaluate", "explain", "benchmark", "bundle", "pipeline", "predict", "report"]
WIDTHS = [60, 100, 200]


def _description(output: str) -> list[list[str]]:
    """The paragraphs between the Usage line and the first panel, each a list of its screen lines."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("Usage:")) + 1
    end = next(i for i, line in enumerate(lines) if line.lstrip().startswith("╭"))
    paragraphs, current = [], []
    for line in lines[start:end]:
        if line.strip():
            current.append(line.strip())
        elif current:
            paragraphs, current = paragraphs + [current], []
    return paragraphs + ([current] if current else [])


def _unforced_breaks(paragraphs: list[list[str]], room: int) -> list[str]:
    """Line breaks after which the next word would still have fitted on the line."""
    return [f"{a!r} / {b!r}" for paragraph in paragraphs for a, b in zip(paragraph, paragraph[1:])
            if len(a) + 1 + len(b.split()[0]) <= room]


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_renders_whole_sentences_at_any_width(command, width):
    from typer.testing import CliRunner

    from skinscan_edge.cli import app

    result = CliRunner().invoke(app, [*([command] if command else []), "--help"], env={"COLUMNS": str(width)})
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.output.splitlines()) <= width
    paragraphs = _description(result.output)
    assert paragraphs, result.output
    # rich pads the description by one column on each side
    assert _unforced_breaks(paragraphs, width - 2) == [], result.output


def test_the_check_finds_a_hard_line_break():
    forced = [["Files already made from this model with the same settings are kept (SHA-256",
               "verified), so running an interrupted export again finishes only what is missing."]]
    stray = [["Files already made from this model with the same settings are kept (SHA-256 verified), so",
              "running an interrupted export again finishes only what is missing."]]
    assert _unforced_breaks(forced, 78) == []
    assert len(_unforced_breaks(stray, 198)) == 1


def test_no_option_help_has_a_hard_line_break():
    """An option's help is wrapped inside its panel's column, so a newline in it breaks the same way."""
    import typer

    from skinscan_edge.cli import app

    group = typer.main.get_command(app)
    broken = [f"{name} {param.opts[0]}" for name, command in [("", group), *group.commands.items()]
              for param in command.params if "\n" in (getattr(param, "help", None) or "")]
    assert broken == []
