"""trainlab: a research template for studying how to make neural networks train well."""

from trainlab.utils.resolvers import register as _register_resolvers

_register_resolvers()

__version__ = "0.1.0"
