"""How a study searches its grid beyond training every cell: successive halving (rungs, rankings,
where each cell stopped: `halving`), a TPE search's rounds (`tpe`), what a search has decided so far,
read from its files (`decisions`), and how far a study got (`progress`). May import `workflow.core`,
`workflow.study` and `workflow.atomic`; it reads the files that training writes, never its code.
"""
