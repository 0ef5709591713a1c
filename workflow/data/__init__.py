"""Datasets, from their sources to the batches a training step sees.

Sources (each a `Source` with its own defaults, checks and files), resumable
verified downloads, the plan (split assignment), resizing, HDF5 shards and their
manifest, the splits loaded whole on the device or streamed from the shards, and
their normalised, augmented batches. May import `workflow.atomic`; never
`workflow.train`, `workflow.results`, `workflow.gpu` or the rules. `datasets` and
`sources` are torch-free: the Snakefile imports them when it parses.
"""
