"""From finished cells to what a user reads: the summary and history tables, the configuration
chosen on validation with its test interval, paired tests and warnings, the papers' pivot tables
and the charts. May import `workflow.study` and the torch-free file formats of `workflow.train`
(`history`, `predictions`); never torch.
"""
