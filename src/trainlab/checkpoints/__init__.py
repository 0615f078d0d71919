"""Checkpoints as data: written atomically (`atomic_io`), read as tensors and plain data only
(`reading`), and rebuilt only from trusted `_target_`s (`trusted_targets`)."""
