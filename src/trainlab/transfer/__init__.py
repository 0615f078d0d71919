"""Transfer learning: which weights a network starts from and which of them train.

- `stages`: a network as backbone stages + head, the same idea for mlp, cnn, resnet and timm.
- `policy`: `TransferPolicy`, the Lightning callback (built on BaseFinetuning) behind the
  `transfer` options scratch, finetune, linear_probe, partial and gradual.
- `pretrained`: `load_pretrained`, called once after the init scheme: timm hub weights, a local
  weights file, or the backbone of a trainlab checkpoint.
"""

from trainlab.transfer.policy import TransferPolicy
from trainlab.transfer.pretrained import LoadReport, load_pretrained
from trainlab.transfer.stages import Split, Stage, split_network

__all__ = ["LoadReport", "Split", "Stage", "TransferPolicy", "load_pretrained", "split_network"]
