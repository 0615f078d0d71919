"""Activation functions that torch does not ship (torch's own are used by name in conf/activation)."""

from trainlab.activations.maxout import Maxout
from trainlab.activations.native import native

__all__ = ["Maxout", "native"]
