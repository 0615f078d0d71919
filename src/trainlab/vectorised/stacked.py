"""K networks of one architecture as one module: stacked parameters and buffers, one vmapped call.

This is PyTorch's model-ensembling recipe (torch.func: `stack_module_state`, `functional_call`,
`vmap`), made into an ordinary `nn.Module`: the K members' parameters are stacked into real
`nn.Parameter` leaves of shape [K, ...], so an ordinary optimizer, `.to(device)`, `state_dict()` and
Lightning hold them like any other module's. The forward pass calls one member network under
`vmap`, each member with its own slice of the parameters and buffers and its own batch.

Where the stacked tensors live: in `network`, a copy of members[0] whose parameters and buffers
have been replaced by the stacked ones under the same names. `functional_call` swaps member k's
slices in for the duration of each vmapped call, so `network` is only the template of the code
that runs; it is never called directly.

What vmap needs, and why it holds for trainlab's networks:
- BatchNorm running statistics (pytorch/pytorch#85533): the buffers are passed to the vmapped
  call stacked like the parameters, so the in-place updates of the running mean, variance and
  batch count (torch's fused BatchNorm, trainlab's BatchNorm from the formulas and ghost BN
  alike) are batched updates of each member's own slice.
- Dropout: `vmap(randomness="different")` draws each member's masks independently. They cannot
  be the masks of the K sequential runs: under vmap one generator draws one [K, ...] mask per
  call, while a sequential run draws its own [...] mask from its own generator state, and no
  seeding makes the first equal to K of the second (tests/test_vectorised_stacked.py checks the
  masks' independence and rate instead).
- Linear layers: vmap's rule for `F.linear` is a matmul plus a separate bias addition, which
  rounds differently from the single network's fused `addmm`; a ReLU whose input is within a
  rounding of 0 then flips, and that member's training drifts away from its sequential run
  (seen: 1e-2 after 5 epochs of the digits MLP). The template's Linear layers therefore call
  `stacked_linear`, whose batching rule is `member_linear`: batched GEMMs that give each member the
  bits of its own `F.linear`, forward and backward, checked per shape in exact mode.
- Exact or fast (`StackedNetwork(members, exact=...)`; None, the default: exact on the CPU, fast
  elsewhere). vmap's own rules for convolution (one grouped convolution, which reduces in
  another order) and BatchNorm (one batch norm over K x C channels without the affine part, which
  it applies afterwards: another rounding) are ~1e-7 away from K separate calls, which Adam
  amplifies on weights whose true gradient is 0 (see optimizers.py). In exact mode Conv2d (zero
  padding) runs as a custom op whose batching rule calls torch's own function once per member:
  autograd records those very calls, so forward and backward are each member's own bits, at the
  cost of K small kernels per layer. torch's BatchNorm1d/2d run as one batch norm over the
  members' K x C channels with the affine part inside, as a member's own call has it, wherever
  that gives each member its own bits (`member_batch_norm`, forward and backward checked per
  shape; in fast mode always). Fast mode otherwise keeps vmap's batched kernels (the GPU default).
- Every other layer of trainlab's networks (pooling, LayerNorm, GroupNorm, InstanceNorm, BatchNorm
  from the formulas, every activation incl. Maxout) is a pure function of its input, parameters
  and buffers, for which vmap has batching rules.
Networks that break these assumptions are refused up front (`NotVectorisable`, naming the layer
and the reason): timm models, hooks, parametrizations, tied weights, non-tensor settings that
differ between members, BatchNorm with a cumulative (momentum=None) average.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap
from torch.nn.utils import parametrize

from trainlab.vectorised.member_batch_norm import member_batch_norm
from trainlab.vectorised.member_linear import member_linear


class NotVectorisable(ValueError):
    """The members cannot train as one stacked network; the message says which layer and why.
    The caller runs them one by one instead."""


class StackedNetwork(nn.Module):
    """K networks of one architecture (same module structure, parameter and buffer shapes) as one
    module whose parameters and buffers carry a leading member dimension of size K.

    `num_members` is K. The stacked tensors are held by `network` (see the module docstring) under
    the member's own names: `stacked_parameters()["head.weight"]` is the [K, ...] Parameter whose
    slice k is member k's `head.weight`. Train and eval mode follow `.train()` / `.eval()` of this
    module, as for any other. `exact`: each member's own bits (K kernels per layer) or one batched
    kernel per layer (~1e-7 apart); None: exact on the CPU, fast elsewhere (module docstring).
    """

    def __init__(self, members: Sequence[nn.Module], exact: bool | None = None) -> None:
        super().__init__()
        members = list(members)
        check_stackable(members)
        self.num_members = len(members)
        self.exact = exact
        network = copy.deepcopy(members[0])
        with torch.no_grad():
            for name, _ in members[0].named_parameters():
                owner, leaf = _owner(network, name)
                slices = [_tensor(member, name) for member in members]
                stacked = torch.stack([s.detach() for s in slices])
                owner._parameters[leaf] = nn.Parameter(stacked, requires_grad=slices[0].requires_grad)
            for name, _ in members[0].named_buffers():
                owner, leaf = _owner(network, name)
                # _buffers[leaf] keeps the buffer's registration, persistent or not
                owner._buffers[leaf] = torch.stack([_tensor(member, name) for member in members])
        for module in network.modules():
            if type(module) in _STACKED_LAYERS:
                # same parameters, buffers and state_dict; vmapped by the rules below
                module.__class__ = _STACKED_LAYERS[type(module)]
        self.network = network
        self.train(members[0].training)
        # (owner module, attribute, full name) of every stacked tensor, looked up at each call:
        # .to(device) replaces buffers (and may replace parameters) in their owners' dicts
        self._parameter_slots = [(*_owner(network, n), n) for n, _ in network.named_parameters()]
        self._buffer_slots = [(*_owner(network, n), n) for n, _ in network.named_buffers()]

    # --- forward ---------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        """x: [K, B, ...] (each member its own batch) -> [K, B, classes]. Training mode updates each
        member's BatchNorm running statistics (torch's BatchNorm and trainlab.norm's BN from the
        formulas, ghost BN) in the stacked buffers; dropout draws each member's masks independently."""
        if x.dim() < 1 or x.shape[0] != self.num_members:
            raise ValueError(
                f"StackedNetwork.forward takes one batch per member, [K={self.num_members}, B, ...], got "
                f"input of shape {tuple(x.shape)}; forward_shared takes one batch [B, ...] for all members."
            )
        return self._call(x, batch_dim=0)

    def forward_shared(self, x: Tensor) -> Tensor:
        """x: [B, ...], the same batch for every member (validation, test) -> [K, B, classes]."""
        return self._call(x, batch_dim=None)

    def _call(self, x: Tensor, batch_dim: int | None) -> Tensor:
        tensors = {name: owner._parameters[leaf] for owner, leaf, name in self._parameter_slots}
        tensors.update({name: owner._buffers[leaf] for owner, leaf, name in self._buffer_slots})
        with _exact_mode(self.exact):
            return vmap(self._call_member, in_dims=(0, batch_dim), randomness="different")(tensors, x)

    def _call_member(self, tensors: dict[str, Tensor], x: Tensor) -> Tensor:
        # tie_weights=False: check_stackable refused tied weights, so there is nothing to tie
        return functional_call(self.network, tensors, (x,), tie_weights=False, strict=True)

    # --- members ---------------------------------------------------------------------------------
    def stacked_parameters(self) -> dict[str, nn.Parameter]:
        """{name of the parameter in the member network: stacked Parameter [K, ...]}, in the
        member's named_parameters() order."""
        return dict(self.network.named_parameters())

    def member_state_dict(self, k: int) -> dict[str, Tensor]:
        """Member k's state_dict with the keys and shapes of members[k].state_dict() (cloned)."""
        self._check_member(k)
        return {name: stacked[k].clone() for name, stacked in self.network.state_dict().items()}

    def load_member_state_dict(self, k: int, state_dict: Mapping[str, Tensor]) -> None:
        """Set member k's parameters and buffers from a state_dict of one member network (all keys
        of members[k].state_dict(), no others)."""
        self._check_member(k)
        stacked = self.network.state_dict(keep_vars=True)
        missing, unexpected = sorted(set(stacked) - set(state_dict)), sorted(set(state_dict) - set(stacked))
        if missing or unexpected:
            raise KeyError(
                f"load_member_state_dict({k}): the state_dict does not fit the member network: missing keys "
                f"{missing}, unexpected keys {unexpected}."
            )
        with torch.no_grad():
            for name, target in stacked.items():
                value = torch.as_tensor(state_dict[name])
                if value.shape != target.shape[1:]:
                    raise ValueError(
                        f"load_member_state_dict({k}): {name} has shape {tuple(value.shape)}, the member "
                        f"network's is {tuple(target.shape[1:])}."
                    )
                target[k].copy_(value)

    def _check_member(self, k: int) -> None:
        if not 0 <= k < self.num_members:
            raise IndexError(f"member {k} does not exist: this network stacks {self.num_members} members.")

    def extra_repr(self) -> str:
        return f"num_members={self.num_members}"


# --- exact or fast: how the layers below run under vmap ----------------------------------------------
# StackedNetwork(exact=...) for the duration of its call; None: exact on the CPU, fast elsewhere
_EXACT: ContextVar[bool | None] = ContextVar("trainlab_stacked_exact", default=None)


@contextlib.contextmanager
def _exact_mode(exact: bool | None) -> Iterator[None]:
    token = _EXACT.set(exact)
    try:
        yield
    finally:
        _EXACT.reset(token)


def _is_exact(x: Tensor) -> bool:
    exact = _EXACT.get()
    return exact if exact is not None else x.device.type == "cpu"


def _per_member_calls(members: int, in_dims, function, *args) -> Tensor:
    """`function` on each member's slices, stacked: per member the very op (and, under autograd,
    the very backward) a single network runs, so the same bits. The slices come from `unbind`,
    whose backward stacks the members' gradients once (`select`'s would write each into a zeroed
    tensor of all members: K^2 work)."""
    per_argument = [
        [a] * members if a is None or d is None else a.unbind(d) for a, d in zip(args, in_dims, strict=True)
    ]
    return torch.stack([function(*member_args) for member_args in zip(*per_argument, strict=True)])


def _leading(t: Tensor | None, dim: int | None, members: int) -> Tensor | None:
    """A physical tensor of a vmap rule with its member dimension first (an unbatched one is
    every member's: expanded, no copy)."""
    if t is None:
        return None
    return t.movedim(dim, 0) if dim is not None else t.expand(members, *t.shape)


# --- Linear layers, bit-exact per member under vmap ----------------------------------------------------
@torch.library.custom_op("trainlab::stacked_linear", mutates_args=())
def stacked_linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """`F.linear` for one member; under vmap `member_linear` over the members (batched GEMMs with
    each member's own bits, trainlab.vectorised.member_linear)."""
    return nn.functional.linear(x, weight, bias)


@stacked_linear.register_fake
def _(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    return x.new_empty(*x.shape[:-1], weight.shape[0])


def _stacked_linear_vmap(info, in_dims, x: Tensor, weight: Tensor, bias: Tensor | None):
    members = info.batch_size
    exact = _is_exact(x)
    if exact and x.dim() - (in_dims[0] is not None) != 2:  # F.linear folds such inputs its own way
        return _per_member_calls(members, in_dims, nn.functional.linear, x, weight, bias), 0
    x, weight, bias = (_leading(t, d, members) for t, d in zip((x, weight, bias), in_dims, strict=True))
    return member_linear(x, weight, bias, exact), 0


stacked_linear.register_vmap(_stacked_linear_vmap)


def _stacked_linear_setup(ctx, inputs, output) -> None:
    x, weight, bias = inputs
    ctx.save_for_backward(x, weight)
    ctx.has_bias = bias is not None


def _stacked_linear_backward(ctx, grad: Tensor):
    # outside vmap (under vmap autograd records member_linear): the derivative of F.linear
    x, weight = ctx.saved_tensors
    rows, grads = x.reshape(-1, x.shape[-1]), grad.reshape(-1, grad.shape[-1])
    grad_bias = grads.sum(0) if ctx.has_bias else None
    return grad @ weight, grads.t() @ rows, grad_bias


stacked_linear.register_autograd(_stacked_linear_backward, setup_context=_stacked_linear_setup)


class _StackedLinear(nn.Linear):
    """nn.Linear whose forward is `stacked_linear` (the template's Linear layers become this)."""

    def forward(self, x: Tensor) -> Tensor:
        return stacked_linear(x, self.weight, self.bias)


# --- Conv2d: exact, one convolution per member; fast, vmap's own rule (a grouped convolution) ----------
@torch.library.custom_op("trainlab::stacked_conv2d", mutates_args=())
def stacked_conv2d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
) -> Tensor:
    """`F.conv2d` for one member (numeric padding); under vmap `F.conv2d` per member: torch's own
    kernels forward and backward, the same bits as a single network (vmap's own rule, one grouped
    convolution over the members, rounds differently)."""
    return nn.functional.conv2d(x, weight, bias, stride, padding, dilation, groups)


@stacked_conv2d.register_fake
def _(x, weight, bias, stride, padding, dilation, groups) -> Tensor:
    return torch.empty_like(
        nn.functional.conv2d(x, weight, bias, stride, padding, dilation, groups), device="meta"
    )


def _stacked_conv2d_vmap(info, in_dims, x, weight, bias, stride, padding, dilation, groups):
    def conv(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return nn.functional.conv2d(x, weight, bias, stride, padding, dilation, groups)

    return _per_member_calls(info.batch_size, in_dims[:3], conv, x, weight, bias), 0


stacked_conv2d.register_vmap(_stacked_conv2d_vmap)


class _StackedConv2d(nn.Conv2d):
    """nn.Conv2d whose convolution is `stacked_conv2d` in exact mode (zero padding given as
    numbers); in fast mode, and for other paddings, vmap's own rule."""

    def _conv_forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if not _is_exact(x) or self.padding_mode != "zeros" or isinstance(self.padding, str):
            return super()._conv_forward(x, weight, bias)
        return stacked_conv2d(
            x, weight, bias, list(self.stride), list(self.padding), list(self.dilation), self.groups
        )


# --- BatchNorm: one batch norm over the members' channels (exact: where the bits allow) ---------------
@torch.library.custom_op("trainlab::stacked_batch_norm", mutates_args=("running_mean", "running_var"))
def stacked_batch_norm(
    x: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    training: bool,
    momentum: float,
    eps: float,
) -> Tensor:
    """`F.batch_norm` for one member; under vmap `member_batch_norm`: one batch norm over the
    members' K x C channels (in exact mode where that gives each member the bits of its own
    forward, backward and running-statistics update, checked per shape; else torch's kernels per
    member)."""
    return nn.functional.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)


@stacked_batch_norm.register_fake
def _(x, running_mean, running_var, weight, bias, training, momentum, eps) -> Tensor:
    return torch.empty_like(x)


def _stacked_batch_norm_vmap(
    info, in_dims, x, running_mean, running_var, weight, bias, training, momentum, eps
):
    def batch_norm(x, running_mean, running_var, weight, bias) -> Tensor:
        return nn.functional.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)

    args = (x, running_mean, running_var, weight, bias)

    def per_member() -> Tensor:
        return _per_member_calls(info.batch_size, in_dims[:5], batch_norm, *args)

    exact = _is_exact(x)
    if any(t is not None and d != 0 for t, d in zip(args[1:], in_dims[1:5], strict=True)):
        return per_member(), 0  # a parameter or statistic shared by the members (not stacked)
    if any(t is not None and not t.is_contiguous() for t in (running_mean, running_var)):
        return per_member(), 0  # updated in place through views of the stack: contiguous only
    x = _leading(x, in_dims[0], info.batch_size)  # unbatched: one batch for every member (validation)
    return member_batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps, exact), 0


stacked_batch_norm.register_vmap(_stacked_batch_norm_vmap)


class _StackedBatchNorm:
    """torch's _BatchNorm.forward (torch/nn/modules/batchnorm.py) with `stacked_batch_norm` for
    `F.batch_norm`, in both modes (vmap's own rule applies the affine part separately and fails
    under autocast, where the input is bf16 and the statistics float32); mixed into
    BatchNorm1d/2d. check_stackable refuses momentum=None."""

    def forward(self, x: Tensor) -> Tensor:
        self._check_input_dim(x)
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
        bn_training = self.training or (self.running_mean is None and self.running_var is None)
        tracked = not self.training or self.track_running_stats
        return stacked_batch_norm(
            x,
            self.running_mean if tracked else None,
            self.running_var if tracked else None,
            self.weight,
            self.bias,
            bn_training,
            self.momentum if self.momentum is not None else 0.0,
            self.eps,
        )


class _StackedBatchNorm1d(_StackedBatchNorm, nn.BatchNorm1d):
    pass


class _StackedBatchNorm2d(_StackedBatchNorm, nn.BatchNorm2d):
    pass


# the layers whose class the stacked network swaps for one with a vmap rule of trainlab's
_STACKED_LAYERS: dict[type[nn.Module], type[nn.Module]] = {
    nn.Linear: _StackedLinear,
    nn.Conv2d: _StackedConv2d,
    nn.BatchNorm1d: _StackedBatchNorm1d,
    nn.BatchNorm2d: _StackedBatchNorm2d,
}


# --- what can be stacked ----------------------------------------------------------------------------
def check_stackable(members: Sequence[nn.Module]) -> None:
    """Raise NotVectorisable naming the first layer and reason that keeps `members` from running as
    one vmapped network; return if they can."""
    if not members:
        raise NotVectorisable("StackedNetwork needs at least one member network, got none.")
    reference = members[0]
    for name, module in reference.named_modules():
        _check_layer(name or "the network", module)
    names = [n for n, _ in reference.named_parameters(remove_duplicate=False)]
    if len(names) != len(dict(reference.named_parameters())):
        raise NotVectorisable(
            f"{type(reference).__name__} shares (ties) parameters between layers, which stacking would untie."
        )
    reference_layers = dict(reference.named_modules())
    for k, member in enumerate(members[1:], start=1):
        layers = dict(member.named_modules())
        if list(layers) != list(reference_layers):
            raise NotVectorisable(
                f"member {k} has other layers than member 0 ({sorted(set(layers) ^ set(reference_layers))[:5]} "
                "differ): only networks of one architecture stack."
            )
        for name, module in layers.items():
            _check_same_layer(k, name or "the network", reference_layers[name], module)


def _check_layer(name: str, module: nn.Module) -> None:
    kind = type(module)
    if kind.__module__.split(".")[0] == "timm":
        raise NotVectorisable(
            f"{name} is a timm layer ({kind.__module__}.{kind.__name__}): timm models are not vectorised "
            "(their layers are not checked under torch.func.vmap); only trainlab's own networks "
            "(model=mlp, cnn, resnet) are. Run these jobs one by one."
        )
    hooks = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    if any(getattr(module, hook, None) for hook in hooks):
        raise NotVectorisable(
            f"{name} ({kind.__name__}) has hooks registered: they would see the stacked, vmapped call "
            "instead of one network's. Stack the networks before registering hooks."
        )
    if parametrize.is_parametrized(module):
        raise NotVectorisable(
            f"{name} ({kind.__name__}) is parametrized (torch.nn.utils.parametrize): its weights are computed, "
            "not stored, and are not stacked."
        )
    if type(module).get_extra_state is not nn.Module.get_extra_state:
        raise NotVectorisable(
            f"{name} ({kind.__name__}) keeps extra (non-tensor) state, which is not stacked."
        )
    if (
        isinstance(module, nn.modules.batchnorm._NormBase)
        and module.track_running_stats
        and module.momentum is None
    ):
        raise NotVectorisable(
            f"{name} ({kind.__name__}) has momentum=None (a cumulative average of the batch statistics), "
            "which reads the batch count on the host at every step; use a momentum (norm.momentum=0.1)."
        )


def _check_same_layer(k: int, name: str, reference: nn.Module, module: nn.Module) -> None:
    if type(module) is not type(reference):
        raise NotVectorisable(
            f"{name} is a {type(module).__name__} in member {k} but a {type(reference).__name__} in member 0."
        )
    for kind, ours, theirs in (
        ("parameter", reference._parameters, module._parameters),
        ("buffer", reference._buffers, module._buffers),
    ):
        if list(ours) != list(theirs):
            raise NotVectorisable(
                f"{name} has {kind}s {list(theirs)} in member {k}, {list(ours)} in member 0."
            )
        for leaf, tensor in ours.items():
            other = theirs[leaf]
            if (tensor is None) != (other is None):
                raise NotVectorisable(f"{name}.{leaf} is None in one of members 0 and {k} only.")
            if tensor is None:
                continue
            for what in ("shape", "dtype", "device", "requires_grad"):
                if getattr(tensor, what) != getattr(other, what):
                    raise NotVectorisable(
                        f"{name}.{leaf} has {what} {getattr(other, what)} in member {k} but "
                        f"{getattr(tensor, what)} in member 0: only networks of one architecture stack."
                    )
    settings = {key: value for key, value in vars(reference).items() if not key.startswith("_")}
    for key, value in settings.items():
        if key != "training" and not _equal(value, vars(module).get(key, _MISSING)):
            raise NotVectorisable(
                f"{name}.{key} is {vars(module).get(key)!r} in member {k} but {value!r} in member 0: a "
                "non-tensor setting of a layer is shared by all members of a stacked network."
            )


_MISSING = object()


def _equal(a: object, b: object) -> bool:
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return (
            isinstance(a, Tensor) and isinstance(b, Tensor) and a.shape == b.shape and bool(torch.equal(a, b))
        )
    try:
        return bool(a == b)
    except Exception:  # values without a truth value of their equality: treat as different
        return False


def _owner(network: nn.Module, name: str) -> tuple[nn.Module, str]:
    """The module holding the tensor `name` ("blocks.0.0.weight") and its attribute ("weight")."""
    path, _, leaf = name.rpartition(".")
    return network.get_submodule(path), leaf


def _tensor(network: nn.Module, name: str) -> Tensor:
    owner, leaf = _owner(network, name)
    return owner._parameters[leaf] if leaf in owner._parameters else owner._buffers[leaf]
