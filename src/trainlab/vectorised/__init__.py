"""Vectorised studies: K jobs of a study whose configs differ only in keys that keep the network's
shape (seed, init, learning rate, weight decay, label smoothing) trained as one model in one
process, each member still its own run (docs/vectorised.md).

- `grouping`: which jobs train together, and why a job cannot.
- `stacked`: `StackedNetwork`, the K members as one module with stacked [K, ...] parameters and
  buffers, run with torch.func (`functional_call` under `vmap`).
- `optimizers`: SGD, Adam and AdamW over the stacked parameters, each member with its own learning
  rate, weight decay, schedule and optimizer state (in torch's own format per member).
- `losses`: per-member cross-entropy with per-member label smoothing.
- `batches`: one training loader whose batches stack each member's own batch.
- `module`, `members`, `group`: the group's LightningModule, each member's records, the group's run.
"""
