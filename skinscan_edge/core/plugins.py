"""Formats from outside the package: modules that register a runtime and a converter.

A plugin module calls ``runtimes.register_runtime`` and ``formats.register_export``
when imported. Name it in the ``SKINSCAN_EDGE_PLUGINS`` environment variable (comma-separated
module names), or in an installed package's ``skinscan_edge.core.plugins`` entry point. Both reach
the benchmark's worker processes too, which a registration made only in the calling process
would not.
"""

from __future__ import annotations

import importlib
import os
from importlib import metadata
from skinscan_edge.core.errors import SkinscanError

ENV = "SKINSCAN_EDGE_PLUGINS"
_loaded: set[str] = set()


def load_plugins() -> list[str]:
    """Import every plugin module once; returns the names loaded so far."""
    names = [n.strip() for n in os.environ.get(ENV, "").split(",") if n.strip()]
    names += [ep.value for ep in metadata.entry_points(group="skinscan_edge.core.plugins")]
    for name in names:
        if name in _loaded:
            continue
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise SkinscanError(f"plugin '{name}' (from {ENV} or an entry point) cannot be imported: {e}") from None
        _loaded.add(name)
    return sorted(_loaded)
