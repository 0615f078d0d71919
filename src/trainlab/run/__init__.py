"""A run's lifecycle and record: summary.json and its statuses, the terminal's account, signals,
DDP's worker processes, threads and the cluster environment."""
