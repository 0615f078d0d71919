"""Per-layer statistics of a network in training, as in the figures of Glorot & Bengio (2010,
"Understanding the difficulty of training deep feedforward neural networks", Fig. 2-7) and He et
al. (2015, "Delving deep into rectifiers", Fig. 2-3): how activations, gradients and updates
change with depth, at init and as training goes on.

A layer is one call of an activation module (ReLU, Tanh, Sigmoid, ..., trainlab's Maxout, or a
user's module declaring itself one: trainlab.layers.traits): its input is the pre-activation, its
output the activation, and the weight layer (Linear/Conv) called last before it is the layer whose
weights produced it. On a sampled training step, for each layer:

    pre_act_mean, pre_act_std   mean and std of the pre-activation (all elements of the batch)
    act_mean, act_std           mean and std of the activation
    saturated                   bounded activations (traits.saturation_bounds): fraction of outputs
                                within 1 - threshold of a bound (threshold 0.99; tanh: |y| > 0.99,
                                sigmoid: y > 0.99 or y < 0.01). Other activations: not logged
    dead                        rectifiers (traits.is_rectifier: ReLU family, GELU, SiLU, ...):
                                fraction of units whose output is <= 0 for every example of the
                                batch (ReLU: exactly 0, so no gradient reaches the unit's weights).
                                A unit is a feature of a vector, or a channel of a feature map (all
                                positions pooled, as a conv shares its weights over them). Other
                                activations: not logged
    unit_diversity              sqrt(mean over examples (and positions) of the variance across
                                units / the variance of all elements), in [0, 1]: 0 when every
                                unit of the layer computes the same value (a symmetric layer,
                                e.g. constant init), near 1 when units differ more than examples
    grad_std                    std of the back-propagated gradient dLoss/d(pre-activation)
                                (the loss as the LightningModule returns it, a batch mean)
    weight_grad_norm            ||dLoss/dW|| (Frobenius) of the weight layer, at the optimizer step
    update_ratio                ||W_after - W_before|| / ||W_before|| over that optimizer step

Cost: hooks exist only during a sampled step (every `every_n_steps` steps, step 0 = at init), so
the other steps run the bare model (compiled, under compile=true: a sampled step runs eagerly);
statistics stay on the device until the next logging step (trainer.log_every_n_steps) or epoch
end, where each sample is read back once: a sampled step makes no host-device synchronisation.

The parts: `measure` (hooks and statistics), `record` (CSV, loggers, W&B histograms and table),
`plots` (PNG against depth); the callback, `callback.LayerStats`, says when each runs.
"""

from trainlab.callbacks.layer_stats.callback import LayerStats, histogram_depths
from trainlab.callbacks.layer_stats.measure import histogram

__all__ = ["LayerStats", "histogram", "histogram_depths"]
