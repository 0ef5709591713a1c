"""What two runs of the same cell may differ in: the history.csv columns that measure wall time."""

TIMING_COLUMNS = ("seconds", "images_per_s")
