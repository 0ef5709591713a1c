"""Watching a sweep: what a training job shows as it goes (`watch`: progress.json, progress lines or a
bar, and, when the study's `tracking:` asks for them, TensorBoard events and MLflow runs), the log of
every attempt (`attempts`), and where every cell of a study stands (`status`, from those files only).
None of it is a result: the tables stay the source of truth, and a tracking failure only warns.
Training never imports it: `python -m workflow train` hands training a `watch.Watch`."""
