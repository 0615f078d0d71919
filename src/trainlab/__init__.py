"""trainlab: a research template for studying how to make neural networks train well."""

from pathlib import Path

from trainlab.utils.resolvers import register as _register_resolvers

_register_resolvers()

__version__ = "0.1.0"


def _config_dir() -> Path:
    """The Hydra configs: `conf/` at the top of a clone (src layout), else the copy that an
    installed package carries as `trainlab/conf` (package data built from the same `conf/`)."""
    package = Path(__file__).resolve().parent
    for candidate in (package.parents[1] / "conf", package / "conf"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise FileNotFoundError(
        f"trainlab's configs (train.yaml) are neither in {package.parents[1] / 'conf'} nor in {package / 'conf'}"
    )


# Where every entry point composes from; a study of your own adds its configs with Hydra's search
# path (hydra.searchpath=[file:///path/to/my_conf]), see README "Extend without editing trainlab".
CONFIG_DIR = str(_config_dir())
