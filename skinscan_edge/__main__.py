"""``python -m skinscan_edge``: the same as the ``skinscan-edge`` command."""

from skinscan_edge.cli import main

main()
