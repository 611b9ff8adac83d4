"""The run folder and what every stage shares: errors and the one boundary that explains them, the run folder (lock,
markers, checkpoints), provenance, processes and DeepSpeed plans, caches, plots, the registry type."""
