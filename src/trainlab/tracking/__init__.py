"""Experiment trackers: the loggers a run writes to (W&B offline unless the user is logged in, CSV,
TensorBoard), how a run is named and grouped there (`naming`), the config it shows
(`tracked_config`), W&B's service process (`wandb_service`) and closing them (`finish`)."""
