"""The foundation every stage stands on, and nothing else: errors, the progress channel, lazy
TensorFlow, the input contract, the run directory and its typed run files (config, manifest,
reports), the run lock, owned folders, worker processes, the export formats table, plugins, the
configs with their defaults, the host's description and the plots.

May import: nothing of skinscan_edge outside ``core``. Every other package imports it.
"""
