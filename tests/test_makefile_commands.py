"""Every ``skinscan-edge`` command line in the Makefile parses against the real CLI.

`make demo` is the first thing a new user runs. Its pipeline line gains flags conditionally (the
arm64 rows where `make arm64-env` could be set up), and a flag the command does not know fails
the demo only on machines where that branch is taken. So each command line is parsed here with
every conditional flag included, by click itself (``make_context`` parses and validates the
options without running the command).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer

from skinscan_edge.cli import app

MAKEFILE = Path(__file__).resolve().parent.parent / "Makefile"


def _command_lines() -> list[tuple[str, list[str]]]:
    text = MAKEFILE.read_text()
    variables = dict(re.findall(r"^([A-Z_0-9]+)\s*[:?]?=\s*(.*?)\s*$", text, re.M))
    joined = re.sub(r"\\\n\s*", " ", text)  # recipe continuation lines
    found = []
    for line in joined.splitlines():
        m = re.search(r"\$\(BIN\)/skinscan-edge (.*)", line)
        if not m:
            continue
        cmd = m.group(1).split(";")[0]
        # $$(test -f X && echo FLAGS): the conditional flags, taken (the branch a set-up machine runs)
        cmd = re.sub(r"\$\$\(test [^)]*?&& echo ([^)]*)\)", r"\1", cmd)
        cmd = re.sub(r"\$\(([A-Z_0-9]+)\)", lambda v: variables[v.group(1)], cmd)
        assert "$" not in cmd, f"a make expression this test cannot expand: {cmd}"
        found.append((line.strip()[:60], shlex.split(cmd)))
    return found


COMMANDS = _command_lines()


def test_the_makefile_has_the_demo_lines():
    names = [args[0] for _, args in COMMANDS]
    assert "pipeline" in names and "demo-data" in names
    pipeline = next(args for _, args in COMMANDS if args[0] == "pipeline")
    assert "--arm64" in pipeline, "the conditional arm64 flags were not expanded"


@pytest.mark.parametrize("where, args", COMMANDS, ids=[args[0] for _, args in COMMANDS])
def test_every_makefile_command_line_parses(where, args):
    group = typer.main.get_command(app)
    sub = group.commands[args[0]]
    ctx = sub.make_context(args[0], list(args[1:]))  # raises click.UsageError on an unknown flag
    assert ctx.params, where
