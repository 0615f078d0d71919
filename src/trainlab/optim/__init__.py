"""Optimisation pieces that torch.optim does not ship: learning-rate schedules (conf/scheduler)."""
