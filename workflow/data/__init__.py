"""Datasets, from their sources to the batches a training step sees.

Sources (each owns its defaults and checks behind one small interface), resumable
verified downloads, the plan (split assignment), resizing, HDF5 shards and their
manifest, and the splits loaded on the device or streamed, with augmentation.
May import `workflow.atomic`; never `workflow.train`, `workflow.results` or the rules.
"""
