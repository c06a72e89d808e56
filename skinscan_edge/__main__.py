"""``python -m skinscan_edge``: the same as the ``skinscan-edge`` command."""

from .cli import main

main()
