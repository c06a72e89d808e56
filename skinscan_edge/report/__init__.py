"""The run's one HTML page (``page``, from ``templates/``), rendered from the JSON that the stages
wrote. Nothing here measures anything.

May import: everything below it: ``core`` to ``release``.
"""
