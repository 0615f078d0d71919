"""Vectorised studies: K networks of one architecture (the seeds and same-shape options of a study)
trained as one model, each member still updated exactly as its own run would be.

- `stacked`: `StackedNetwork`, the K members as one module with stacked [K, ...] parameters and
  buffers, run with torch.func (`functional_call` under `vmap`).
- `optimizers`: SGD, Adam and AdamW over the stacked parameters, each member with its own learning
  rate, weight decay, schedule and optimizer state (in torch's own format per member).
- `losses`: per-member cross-entropy with per-member label smoothing.
"""
