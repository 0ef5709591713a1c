"""One cell's training: backbones and models, starting weights, the training loop, run state and
resumable checkpoints, stop signals, the errors of a cell's own making and the metrics a cell reports.
`cell.train_cell` trains a cell; `cell.run_job` runs it as `python -m workflow train` does.
May import `workflow.core` (the typed cell) and `workflow.data` (batches, manifests); never the study or
the watch code: training reports its progress to the `watcher.Watcher` it is handed.
"""
