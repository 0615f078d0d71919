"""Transfer learning: which weights a network starts from and which of them train.

- `network`: `TransferNetwork`, what a network provides to transfer learning (`transfer_split()`).
- `stages`: a network as backbone stages + head, the same idea for mlp, cnn, resnet and timm.
- `policy`: `TransferPolicy`, the Lightning callback (built on BaseFinetuning) behind the
  `transfer` options scratch, finetune, linear_probe, partial and gradual.
- `layer_decay`: the layers of layer-wise LR decay (`transfer.layer_decay`) and their rate scales.
- `pretrained`: `WeightSources` (`transfer.pretrained*`) and `load_pretrained`, called once after
  the init scheme: timm hub weights, a local weights file, or the backbone of a trainlab checkpoint.
- `aliases`: the weight sources' old names (`model.pretrained*`), moved to `transfer.*` with a warning.
"""

from trainlab.layers.stages import Split, Stage, blocks_and_head, split_network
from trainlab.layers.transferable import Layer, TransferNetwork, register_adapter, transfer_view
from trainlab.transfer.policy import TransferPolicy
from trainlab.transfer.pretrained import LoadReport, WeightSources, load_pretrained

__all__ = [
    "Layer",
    "LoadReport",
    "Split",
    "Stage",
    "TransferNetwork",
    "TransferPolicy",
    "WeightSources",
    "blocks_and_head",
    "load_pretrained",
    "register_adapter",
    "split_network",
    "transfer_view",
]
