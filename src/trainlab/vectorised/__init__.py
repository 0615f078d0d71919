"""Vectorised studies: the seeds and same-shape options of a study trained as one model, each member still its own run."""
