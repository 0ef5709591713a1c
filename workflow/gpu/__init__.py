"""A GPU (or some of its slots) per local job: device and slot locks, slot arithmetic,
and the memory probes that size a cell's share. May import `workflow.study` and
`workflow.train` (the probe runs real training steps).
"""
