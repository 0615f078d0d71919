"""Initialisation schemes: one function each, applied to a built network."""
