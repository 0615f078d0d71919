"""A run's lifecycle: its record (summary.json, status), checkpoints (written atomically, read as
data), trackers (loggers), threads and cluster environment."""
