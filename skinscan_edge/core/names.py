"""Which names the pipeline carries: class labels and image file names.

**Labels** (a ``--labels`` map's values, folder names used as labels, the lines of a run's
``labels.txt``) become one line each of ``labels.txt``, the phone bundle's label list, the
report and every message. A label must be one line of printable text: not empty, no leading or
trailing space, only characters ``str.isprintable`` accepts (no control characters, no line or
paragraph separators, no zero-width or bidirectional-override characters, no private-use or
unassigned code points), and unique once Unicode-normalized (NFC), so that two labels that look
the same are refused as duplicates. Anything else is refused with one line naming the key.

**File names** are skipped at scan time, with a reason, when the pipeline cannot carry them:

* ``undecodable-name``: not valid UTF-8 (a zip made on Windows and extracted on Linux). Python
  hands such a name over with surrogate escapes; split.json, the report, the messages and the
  tf.data string tensors are all UTF-8 text, so carrying the raw bytes would need a second
  path encoding in every one of them. Skipping is the smaller, safer choice, and renaming is one
  command away (``convmv -f cp1252 -t utf8 -r --notest DIR``).
* ``control-char-name``: a control character or a line break (``\\n``, ``\\t``, U+2028 ...) in the
  name: it would split a line of the Markdown tables and of predict's output.

Everything else, including very long names, right-to-left text and zero-width characters, is
carried unchanged (tested end to end through the scan, split.json and the tf.data pipeline).
"""

from __future__ import annotations

import os
import unicodedata

from skinscan_edge.core.errors import SkinscanError

#: Why a file is skipped for its name (skipped.json's ``reason``), beside ``imageio.REASONS``.
NAME_REASONS = ("undecodable-name", "control-char-name")

#: Line breaks that are not control characters, which str.splitlines() still splits on.
_LINE_BREAKS = {"\u2028", "\u2029"}


def shown(name: str) -> str:
    """A name as one printable line for a message: Python's repr escapes every non-printable
    character (``'Line\\nBreak'``, ``'\\udcff'`` for an undecodable byte)."""
    return repr(name)


def label_problem(label: object) -> str | None:
    """Why ``label`` cannot be a label, or None when it can."""
    if not isinstance(label, str):
        return f"is a {type(label).__name__}, not text"
    if not label:
        return "is empty"
    if label != label.strip():
        return "has leading or trailing space"
    bad = next((c for c in label if not c.isprintable()), None)
    if bad is not None:
        what = "a line break" if bad in "\n\r" or bad in _LINE_BREAKS else "a non-printable character"
        return f"contains {what} ({shown(bad)}, U+{ord(bad):04X})"
    return None


def check_labels(labels: list, keys: list[str], where: str) -> list[str]:
    """Refuse, with one line naming the key, any label that breaks the rule or repeats one.

    ``keys[i]`` says where ``labels[i]`` came from (a folder name, a line number) in the
    message; ``where`` names the source (``--labels FILE``, ``RUN/labels.txt``)."""
    seen: dict[str, str] = {}
    for key, label in zip(keys, labels):
        why = label_problem(label)
        if why:
            raise SkinscanError(f"{where}: the label for {key} {why}; labels must be one line of printable "
                                f"text without leading or trailing space")
        norm = unicodedata.normalize("NFC", label)
        if norm in seen:
            raise SkinscanError(f"{where}: {key} and {seen[norm]} have the same label {shown(label)}; "
                                f"each class needs its own label")
        seen[norm] = key
    return list(labels)


def file_name_problem(relpath: str) -> str | None:
    """The skip reason (one of NAME_REASONS) for a path the pipeline cannot carry, or None."""
    try:
        relpath.encode("utf-8")
    except UnicodeEncodeError:  # surrogate escapes: bytes that are not UTF-8
        return "undecodable-name"
    if any(unicodedata.category(c) == "Cc" or c in _LINE_BREAKS for c in relpath):
        return "control-char-name"
    return None


def printable_path(relpath: str) -> str:
    """A skipped path as UTF-8 text for skipped.json and the report: undecodable bytes as
    ``\\xff``, control characters as ``\\n``, ``\\x1b``, ``\\u2028``."""
    text = os.fsencode(relpath).decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() or c == " " else ascii(c)[1:-1] for c in text)
