"""Input noise vs L2 weight decay for a linear least-squares model (Bishop 1995).

    python scripts/noise_as_l2.py -m experiment=noise_as_l2 module.sigma=0,0.5,1 module.regulariser=noise,l2

The study needs a squared-error LightningModule (trainlab.models.regression.NoisyRegression,
named by the `module` key of conf/experiment/noise_as_l2.yaml) instead of the classifier that
`python -m trainlab.train` builds. This entry point is trainlab.train with that one piece
swapped: the same config tree, run directories, summary.json, loggers and callbacks.
"""

from __future__ import annotations

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from trainlab import builders
from trainlab.init import apply_init
from trainlab.train import CONFIG_DIR, train
from trainlab.utils.config import ConfigError, check_arguments, plain


def build_module(cfg: DictConfig, datamodule) -> object:
    """builders.build_model, with the LightningModule taken from `cfg.module`."""
    module = cfg.get("module")
    if not module:
        raise ConfigError(
            "scripts/noise_as_l2.py needs a `module` config: run it with experiment=noise_as_l2."
        )
    check_arguments(module, "module")
    model = instantiate(
        module,
        network=builders.network_spec(cfg, datamodule),
        optimizer=plain(cfg.optimizer),
        scheduler=plain(cfg.scheduler) or None,
        _recursive_=False,  # the network, optimizer and schedule configs are built by the module
    )
    apply_init(model.net, cfg.init, datamodule)
    return model


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> None:
    builders.build_model = build_module  # the one piece that differs from trainlab.train
    train(cfg)


if __name__ == "__main__":
    main()
