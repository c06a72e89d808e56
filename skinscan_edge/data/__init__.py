"""Images in: scan, validate and split a folder (``folder``), decode (``imageio``), near-duplicates
(``dedup``), known groups (``grouping``), the data fingerprint (``fingerprint``), the decoded-image
cache (``imagecache``) and the SYNTHETIC demo data set (``demo``).

May import: ``core``.
"""
