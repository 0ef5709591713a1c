"""One cell's training: models and backbones, starting weights, the training loop,
run state and resumable checkpoints, stop signals and the metrics a cell reports.
May import `workflow.study` (stage settings) and `workflow.data` (batches, manifests).
"""
