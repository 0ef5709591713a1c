"""From finished cells to what a user reads: the summary and history tables,
statistics across seeds, the papers' pivot tables and the charts. May import
`workflow.study`; never torch.
"""
