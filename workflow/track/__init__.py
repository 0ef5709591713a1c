"""Watching a cell train: its progress file, progress lines or bar, the log of every attempt and,
when the study's `tracking:` asks for them, TensorBoard events. None of it is a result: the tables
stay the source of truth, and a tracking failure only warns."""
