"""SGD, Adam and AdamW over stacked parameters [K, ...], each member with its own learning rate,
weight decay, schedule and optimizer state, updated as its own torch optimizer would update it.

Each parameter group's "lr" and "weight_decay" (and "initial_lr", once a schedule has set it) are
[K] float64 tensors (`MemberValues`) on the parameters' device, broadcast over each parameter's
trailing dimensions. float64 because torch's optimizers and schedules compute these rates as
Python floats (doubles) and round them to the parameter's dtype only where they meet a tensor;
keeping them in float64 until then gives member k the very same rounded factors.

The updates follow torch's single-tensor algorithms (torch/optim/sgd.py `_single_tensor_sgd`,
adam.py `_single_tensor_adam`, which AdamW runs with decoupled weight decay; what torch runs on the
CPU by default: `_default_to_fused_or_foreach` offers foreach kernels only on GPUs) op for op, in
one of two modes (constructor argument `exact`; None, the default: exact on the CPU, fast elsewhere):

- exact: torch's own bits. The ops whose scalars are the same for every member (the moments'
  `lerp_`, `mul_`, `addcmul_`, `sqrt`, the momentum buffer) run on the whole stacked tensor:
  elementwise kernels with the same Python-scalar arguments give each element the same bits in a
  [K, ...] tensor as in its member's own (tested, tails of the vectorised loops included). The ops
  that take a member's lr, weight decay or step (`param.addcdiv_(exp_avg, denom,
  value=-step_size)`, `param.mul_(1 - lr * weight_decay)`, `grad.add(param, alpha=weight_decay)`,
  `param.add_(grad, alpha=-lr)`) run on each member's slice with the Python floats torch computes
  (step_size = lr / bias_correction1 in float64, ...), read from the [K] values once per step
  (`.tolist()`: no device sync on the CPU). Where every member has the same value (a study over
  seeds or init schemes) that op runs once on the whole stack; otherwise it costs K small kernels
  per parameter per step.
- fast: no host reads and no per-member loops: where torch multiplies by a Python scalar, the
  stacked update multiplies by the members' [K] values, and the scalars torch fuses into one
  kernel (`add_(x, alpha=a)`) become a separate multiply. Results agree to a rounding of the last
  bit (tests: 1e-6), which Adam can amplify: on a parameter whose true gradient is 0 (a weight of
  a constant input pixel under BatchNorm) Adam normalises the gradient's ~1e-9 rounding noise into
  steps of size lr, so a 1-ulp difference grows to the order of lr.

The state is torch's, stacked: "momentum_buffer", "exp_avg", "exp_avg_sq", "max_exp_avg_sq" are
[K, ...] and Adam's "step" is a [K] float32 tensor on the parameter's device (so no step reads
a value back to the host). `member_optimizer_state(optimizer, k)` cuts out member k's in the
format of its own torch optimizer's `state_dict()`, and `load_member_optimizer_state` puts one
back. `freeze_member(k)` stops a member (a diverged one, whose gradients may be NaN): its
parameters and state are restored after each update, so nothing of it changes.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from trainlab.vectorised.stacked import StackedNetwork

# the group keys that hold one value per member
MEMBER_KEYS = ("lr", "weight_decay", "initial_lr")


class MemberValues(Tensor):
    """A [K] tensor of one hyperparameter per member (a group's "lr", "weight_decay", "initial_lr").

    torch's LR schedulers write a group's tensor "lr" with `fill_(new_lr)` (lr_scheduler.py,
    `_update_param_group_val`), which takes a single value; here `fill_` with a [K] tensor copies
    it, so a LambdaLR over the stacked optimizer (base rates [K] times the schedule's factor) sets
    every member's own rate, as K schedules over K optimizers would.

    Everything computed from it (a clone, a schedule's base rates times a factor, a slice) is a
    plain tensor: only the group's own entry behaves so, and a checkpoint of the schedule's
    tensors needs no class of trainlab's to load.
    """

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        with torch._C.DisableTorchFunctionSubclass():
            if func is Tensor.fill_ and isinstance(args[1], Tensor) and args[1].dim() > 0:
                return args[0].copy_(args[1])
            return func(*args, **(kwargs or {}))


def member_values(value: Any, num_members: int, device: torch.device | str, key: str) -> MemberValues:
    """One float64 value per member, on `device`: from a number (every member the same), a
    sequence of K numbers or a [K] tensor. Always a new tensor (groups never share one)."""
    values = torch.as_tensor(_plain(value) if isinstance(value, Tensor) else value, dtype=torch.float64)
    values = values.detach().to(device=device, dtype=torch.float64).clone()
    if values.dim() == 0:
        values = values.expand(num_members).clone()
    if values.shape != (num_members,):
        raise ValueError(
            f"{key} must be one number or one per member ({num_members}), got shape {tuple(values.shape)}."
        )
    if key in ("lr", "weight_decay") and bool((values < 0).any()):
        raise ValueError(f"{key} must be >= 0 for every member, got {values.tolist()}.")
    return values.as_subclass(MemberValues)


class StackedOptimizer(Optimizer):
    """The part common to the stacked optimizers: per-member group values, frozen members, the
    state_dict round trip. Subclasses implement `_update(group, params)` (all members) and the
    member state format (`_member_state`, `_load_member_state`)."""

    def __init__(
        self, params: Iterable, num_members: int, defaults: dict[str, Any], exact: bool | None = None
    ) -> None:
        if num_members < 1:
            raise ValueError(f"num_members={num_members} must be >= 1.")
        self.num_members = num_members
        self.exact = exact
        self.frozen_members: set[int] = set()
        self._frozen_index: dict[torch.device, Tensor] = {}
        self._nonzero_cache: dict[int, tuple[int, bool]] = {}
        super().__init__(params, defaults)
        # member_optimizer_state's layout of each group: its keys in order and the Python type of
        # each member value (stacked_optimizer sets those of the members' own optimizers)
        self.member_layout = [
            {"keys": [key for key in group if key != "params"], "types": {}} for group in self.param_groups
        ]

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        for p in group["params"]:
            if p.dim() == 0 or p.shape[0] != self.num_members:
                raise ValueError(
                    f"{type(self).__name__} takes stacked parameters [K={self.num_members}, ...], got one of "
                    f"shape {tuple(p.shape)}."
                )
        device = group["params"][0].device if group["params"] else "cpu"
        for key in MEMBER_KEYS:
            if key in group:
                group[key] = member_values(group[key], self.num_members, device, key)
        if group.get("differentiable"):
            raise ValueError(f"{type(self).__name__} does not support differentiable=True.")
        if hasattr(self, "member_layout"):  # a group added after construction
            self.member_layout.append({"keys": [key for key in group if key != "params"], "types": {}})

    # --- frozen members --------------------------------------------------------------------------
    def freeze_member(self, k: int) -> None:
        """From now on member k's parameters and optimizer state stop changing (its gradients, even
        NaN ones, are ignored); the other members train on."""
        if not 0 <= k < self.num_members:
            raise IndexError(f"member {k} does not exist: this optimizer has {self.num_members} members.")
        self.frozen_members.add(k)
        self._frozen_index.clear()

    def _frozen(self, device: torch.device) -> Tensor | None:
        if not self.frozen_members:
            return None
        if device not in self._frozen_index:
            self._frozen_index[device] = torch.tensor(sorted(self.frozen_members), device=device)
        return self._frozen_index[device]

    # --- the step --------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            if any(p.grad.is_sparse for p in params):
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients.")
            frozen = self._frozen(params[0].device)
            saved = [self._save(p, frozen) for p in params] if frozen is not None else None
            self._update(group, params)
            if saved is not None:
                for p, before in zip(params, saved, strict=True):
                    self._restore(p, frozen, before)
        return loss

    def _save(self, p: Tensor, index: Tensor) -> dict[str, Tensor | None]:
        """The frozen members' slices of a parameter and its stacked state, before an update."""
        saved: dict[str, Tensor | None] = {"param": p.index_select(0, index)}
        for key in self._stacked_state_keys():
            value = self.state[p].get(key) if p in self.state else None
            saved[key] = value.index_select(0, index) if isinstance(value, Tensor) else None
        saved["stepped"] = list(self.state[p]["stepped"]) if "stepped" in self.state.get(p, {}) else None
        return saved

    def _restore(self, p: Tensor, index: Tensor, saved: dict[str, Tensor | None]) -> None:
        p.index_copy_(0, index, saved["param"])
        state = self.state[p]
        for key in self._stacked_state_keys():
            value = state.get(key)
            if not isinstance(value, Tensor):
                continue
            if saved[key] is None:  # state created by this update: the frozen members have none
                value.index_fill_(0, index, 0)
            else:
                value.index_copy_(0, index, saved[key])
        if "stepped" in state:
            before = saved["stepped"] or [False] * self.num_members
            state["stepped"] = [
                before[k] if k in self.frozen_members else done for k, done in enumerate(state["stepped"])
            ]

    def _update(self, group: dict[str, Any], params: list[Tensor]) -> None:
        raise NotImplementedError

    def _exact(self, p: Tensor) -> bool:
        """The exact update (member by member, torch's own scalars) unless told otherwise, or on a GPU."""
        return self.exact if self.exact is not None else p.device.type == "cpu"

    def _stacked_state_keys(self) -> tuple[str, ...]:
        raise NotImplementedError

    def _nonzero(self, values: Tensor) -> bool:
        """Whether any member's value is non-zero, read on the host only when the values changed
        (torch skips weight decay 0 altogether; reading it every step would sync a GPU)."""
        key, version = id(values), values._version
        cached = self._nonzero_cache.get(key)
        if cached is None or cached[0] != version:
            cached = (version, bool((_plain(values) != 0).any()))
            self._nonzero_cache[key] = cached
        return cached[1]

    # --- member state ------------------------------------------------------------------------------
    def _member_state(self, p: Tensor, group: dict[str, Any], k: int) -> dict[str, Any] | None:
        raise NotImplementedError

    def _load_member_state(
        self, p: Tensor, group: dict[str, Any], k: int, state: dict[str, Any] | None
    ) -> None:
        raise NotImplementedError

    # --- state_dict round trip ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """torch's format; the [K] member values as plain tensors (a checkpoint needs no class of
        trainlab's to load)."""
        state = super().state_dict()
        state["param_groups"] = [
            {
                key: _plain(value).clone() if isinstance(value, MemberValues) else value
                for key, value in group.items()
            }
            for group in state["param_groups"]
        ]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            device = group["params"][0].device if group["params"] else "cpu"
            for key in MEMBER_KEYS:
                if key in group:
                    group[key] = member_values(group[key], self.num_members, device, key)
            for p in group["params"]:
                if isinstance(self.state.get(p, {}).get("step"), Tensor):
                    self.state[p]["step"] = self.state[p]["step"].to(device=p.device, dtype=torch.float32)
        self._nonzero_cache.clear()


class StackedSGD(StackedOptimizer):
    """torch.optim.SGD (momentum, dampening, nesterov, weight_decay, maximize) for every member,
    with per-member lr and weight_decay (numbers, K numbers or [K] tensors)."""

    def __init__(
        self,
        params: Iterable,
        num_members: int,
        lr: Any = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: Any = 0.0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
        fused: bool | None = None,
        exact: bool | None = None,
    ) -> None:
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "maximize": maximize,
            "foreach": foreach,
            "differentiable": differentiable,
            "fused": fused,
        }
        super().__init__(params, num_members, defaults, exact)

    def _stacked_state_keys(self) -> tuple[str, ...]:
        return ("momentum_buffer",)

    def _update(self, group: dict[str, Any], params: list[Tensor]) -> None:
        # torch/optim/sgd.py, _single_tensor_sgd
        lr, weight_decay = _plain(group["lr"]), _plain(group["weight_decay"])
        momentum, dampening, nesterov = group["momentum"], group["dampening"], group["nesterov"]
        decay = self._nonzero(group["weight_decay"])
        exact = self._exact(params[0])
        if exact:  # torch's own Python floats, read once per step (no device sync on the CPU)
            lrs, weight_decays = lr.tolist(), weight_decay.tolist()
        for p in params:
            grad = p.grad if not group["maximize"] else -p.grad
            if decay and exact:
                grad = _member_add(grad, p, weight_decays)  # grad.add(param, alpha=wd), per member
            elif decay:
                grad = torch.addcmul(grad, p, _per_member(weight_decay, p))  # grad.add(param, alpha=wd)
            if momentum != 0:
                state = self.state[p]
                buf = state.get("momentum_buffer")
                stepped = state.get("stepped", [False] * self.num_members)
                if buf is None:
                    buf = grad.detach().clone()
                    state["momentum_buffer"] = buf
                elif all(stepped):
                    buf.mul_(momentum).add_(grad, alpha=1 - dampening)
                else:  # members without a buffer yet (loaded so) start it from the gradient, as torch
                    fresh = torch.tensor([not s for s in stepped], device=p.device)
                    updated = buf.mul(momentum).add_(grad, alpha=1 - dampening)
                    buf.copy_(torch.where(_per_member(fresh, p), grad, updated))
                state["stepped"] = [True] * self.num_members
                grad = grad.add(buf, alpha=momentum) if nesterov else buf
            if exact:
                _member_op(Tensor.add_, [-lr for lr in lrs], p, grad, keyword="alpha")
            else:
                p.addcmul_(grad, _per_member(lr, p), value=-1)  # param.add_(grad, alpha=-lr)

    def _member_state(self, p: Tensor, group: dict[str, Any], k: int) -> dict[str, Any] | None:
        state = self.state.get(p, {})
        if group["momentum"] == 0 or "momentum_buffer" not in state or not state["stepped"][k]:
            return None
        return {"momentum_buffer": state["momentum_buffer"][k].clone()}

    def _load_member_state(
        self, p: Tensor, group: dict[str, Any], k: int, state: dict[str, Any] | None
    ) -> None:
        if group["momentum"] == 0:
            return
        stacked = self.state[p]
        if "momentum_buffer" not in stacked:
            stacked["momentum_buffer"] = torch.zeros_like(p)
            stacked["stepped"] = [False] * self.num_members
        stepped = list(stacked["stepped"])
        if state is None or state.get("momentum_buffer") is None:
            stacked["momentum_buffer"][k].zero_()
            stepped[k] = False
        else:
            stacked["momentum_buffer"][k].copy_(state["momentum_buffer"])
            stepped[k] = True
        stacked["stepped"] = stepped


class StackedAdam(StackedOptimizer):
    """torch.optim.Adam (amsgrad, maximize, weight_decay coupled to the gradient) for every
    member, with per-member lr and weight_decay; `decoupled_weight_decay=True` is AdamW."""

    def __init__(
        self,
        params: Iterable,
        num_members: int,
        lr: Any = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: Any = 0.0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        decoupled_weight_decay: bool = False,
        exact: bool | None = None,
    ) -> None:
        if not eps >= 0.0:
            raise ValueError(f"Invalid epsilon value: {eps}")
        betas = tuple(float(b) for b in betas)
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"Invalid beta parameters: {betas}")
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "amsgrad": amsgrad,
            "maximize": maximize,
            "foreach": foreach,
            "capturable": capturable,
            "differentiable": differentiable,
            "fused": fused,
            "decoupled_weight_decay": decoupled_weight_decay,
        }
        super().__init__(params, num_members, defaults, exact)

    def _stacked_state_keys(self) -> tuple[str, ...]:
        return ("step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq")

    def _update(self, group: dict[str, Any], params: list[Tensor]) -> None:
        if params and self._exact(params[0]):
            self._update_exact(group, params)
            return
        # torch/optim/adam.py, _single_tensor_adam (capturable=False, differentiable=False)
        lr, weight_decay = _plain(group["lr"]), _plain(group["weight_decay"])
        beta1, beta2 = (float(b) for b in group["betas"])
        decay = self._nonzero(group["weight_decay"])
        for p in params:
            grad = p.grad if not group["maximize"] else -p.grad
            state = self.state[p]
            if not state:
                self._init_state(state, group, p)
            exp_avg, exp_avg_sq, step = state["exp_avg"], state["exp_avg_sq"], state["step"]
            step += 1
            if decay:
                if group["decoupled_weight_decay"]:
                    p.mul_(_per_member(1 - lr * weight_decay, p))  # param.mul_(1 - lr * weight_decay)
                else:
                    grad = torch.addcmul(grad, p, _per_member(weight_decay, p))  # grad.add(param, alpha=wd)
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            # torch computes these per-step factors as Python floats (doubles) from the float32 step
            step64 = step.double()
            bias_correction1 = 1 - beta1**step64
            bias_correction2 = 1 - beta2**step64
            step_size = lr / bias_correction1
            bias_correction2_sqrt = bias_correction2**0.5
            if group["amsgrad"]:
                torch.maximum(state["max_exp_avg_sq"], exp_avg_sq, out=state["max_exp_avg_sq"])
                second = state["max_exp_avg_sq"]
            else:
                second = exp_avg_sq
            denom = (second.sqrt() / _per_member(bias_correction2_sqrt, p)).add_(group["eps"])
            # param.addcdiv_(exp_avg, denom, value=-step_size): param + (-step_size * exp_avg) / denom
            p.add_(exp_avg.mul(_per_member(-step_size, p)).div_(denom))

    def _update_exact(self, group: dict[str, Any], params: list[Tensor]) -> None:
        """torch/optim/adam.py, _single_tensor_adam (capturable=False, differentiable=False) op for
        op: the ops with only shared scalars on the stacked tensors, those with a member's lr, weight
        decay or step per member slice, with the Python floats torch computes."""
        lrs, weight_decays = _plain(group["lr"]).tolist(), _plain(group["weight_decay"]).tolist()
        beta1, beta2 = (float(b) for b in group["betas"])
        eps = group["eps"]
        for p in params:
            grad = p.grad if not group["maximize"] else -p.grad
            state = self.state[p]
            if not state:
                self._init_state(state, group, p)
            exp_avg, exp_avg_sq, step_t = state["exp_avg"], state["exp_avg_sq"], state["step"]
            step_t += 1
            if any(weight_decays):
                if group["decoupled_weight_decay"]:
                    # a member without weight decay multiplies by 1.0, which changes no bit
                    factors = [1 - lr * wd for lr, wd in zip(lrs, weight_decays, strict=True)]
                    _member_op(Tensor.mul_, factors, p)
                else:
                    grad = _member_add(grad, p, weight_decays)  # grad.add(param, alpha=weight_decay)
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            steps = step_t.tolist()  # torch: step = _get_value(step_t), a Python float
            bias_corrections2_sqrt = [(1 - beta2**step) ** 0.5 for step in steps]
            if group["amsgrad"]:
                torch.maximum(state["max_exp_avg_sq"], exp_avg_sq, out=state["max_exp_avg_sq"])
                second = state["max_exp_avg_sq"]
            else:
                second = exp_avg_sq
            denom = second.sqrt()
            if len(set(bias_corrections2_sqrt)) == 1:
                denom.div_(bias_corrections2_sqrt[0])
            else:  # members at different steps (one loaded from elsewhere)
                for k, bias_correction2_sqrt in enumerate(bias_corrections2_sqrt):
                    denom[k].div_(bias_correction2_sqrt)
            denom.add_(eps)
            step_sizes = [lr / (1 - beta1**step) for lr, step in zip(lrs, steps, strict=True)]
            _member_op(Tensor.addcdiv_, [-size for size in step_sizes], p, exp_avg, denom, keyword="value")

    def _init_state(self, state: dict[str, Any], group: dict[str, Any], p: Tensor) -> None:
        state["step"] = torch.zeros(self.num_members, dtype=torch.float32, device=p.device)
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _member_state(self, p: Tensor, group: dict[str, Any], k: int) -> dict[str, Any] | None:
        state = self.state.get(p, {})
        if "step" not in state or float(state["step"][k]) == 0:
            return None
        # torch keeps `step` a float32 scalar on the CPU, on the parameter's device when capturable or fused
        on_device = group.get("capturable") or group.get("fused")
        member = {"step": state["step"][k].detach().to("cpu" if not on_device else p.device).clone()}
        keys = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq") if group["amsgrad"] else ("exp_avg", "exp_avg_sq")
        member.update({key: state[key][k].clone() for key in keys})
        return member

    def _load_member_state(
        self, p: Tensor, group: dict[str, Any], k: int, state: dict[str, Any] | None
    ) -> None:
        stacked = self.state[p]
        if not stacked:
            stacked["step"] = torch.zeros(self.num_members, dtype=torch.float32, device=p.device)
            stacked["exp_avg"] = torch.zeros_like(p)
            stacked["exp_avg_sq"] = torch.zeros_like(p)
            if group["amsgrad"]:
                stacked["max_exp_avg_sq"] = torch.zeros_like(p)
        keys = [key for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq") if key in stacked]
        if not state:
            stacked["step"][k] = 0
            for key in keys:
                stacked[key][k].zero_()
            return
        stacked["step"][k] = float(state["step"])
        for key in keys:
            stacked[key][k].copy_(state[key])


class StackedAdamW(StackedAdam):
    """torch.optim.AdamW: Adam with decoupled weight decay (default 1e-2), per member."""

    def __init__(
        self,
        params: Iterable,
        num_members: int,
        lr: Any = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: Any = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        exact: bool | None = None,
    ) -> None:
        super().__init__(
            params,
            num_members,
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            foreach=foreach,
            maximize=maximize,
            capturable=capturable,
            differentiable=differentiable,
            fused=fused,
            decoupled_weight_decay=True,
            exact=exact,
        )


# the torch optimizer each stacked one reproduces (exact classes: a subclass may change the algorithm)
STACKED_OPTIMIZERS: dict[type[Optimizer], type[StackedOptimizer]] = {
    torch.optim.SGD: StackedSGD,
    torch.optim.Adam: StackedAdam,
    torch.optim.AdamW: StackedAdamW,
}


def stacked_optimizer(
    member_optimizers: Sequence[Optimizer],
    member_networks: Sequence[torch.nn.Module],
    network: StackedNetwork,
    exact: bool | None = None,
) -> StackedOptimizer:
    """One optimizer over the stacked parameters that updates member k exactly as
    member_optimizers[k] (torch's SGD with momentum/nesterov/dampening, Adam, AdamW, built by each
    member module's own configure_optimizers over member_networks[k]'s parameters) would update
    member k. Same class and same parameter-group structure across members required (else a
    ValueError naming what differs). Each group's "lr" and "weight_decay" are [K] tensors, so that
    torch's LR schedulers (LambdaLR: trainlab.optim.schedulers) scale every member's own rate.
    State the member optimizers already hold (a resumed run's) is carried over."""
    count = len(member_optimizers)
    if count != len(member_networks) or count != network.num_members:
        raise ValueError(
            f"stacked_optimizer needs one optimizer and one network per member: got {count} optimizers, "
            f"{len(member_networks)} networks, a stacked network of {network.num_members} members."
        )
    kind = type(member_optimizers[0])
    for k, optimizer in enumerate(member_optimizers):
        if type(optimizer) is not kind:
            raise ValueError(
                f"member {k}'s optimizer is a {type(optimizer).__name__}, member 0's a {kind.__name__}: the "
                "members of a stacked network share one optimizer class."
            )
    if kind not in STACKED_OPTIMIZERS:
        raise ValueError(
            f"{kind.__module__}.{kind.__name__} has no stacked version; the choices are "
            f"{[f'{c.__module__}.{c.__name__}' for c in STACKED_OPTIMIZERS]}."
        )
    stacked = network.stacked_parameters()
    names = [{id(p): n for n, p in net.named_parameters()} for net in member_networks]
    layouts = _member_layouts(member_optimizers)
    groups = []
    for index, reference in enumerate(member_optimizers[0].param_groups):
        group_names = []
        for k, optimizer in enumerate(member_optimizers):
            if len(optimizer.param_groups) != len(member_optimizers[0].param_groups):
                raise ValueError(
                    f"member {k}'s optimizer has {len(optimizer.param_groups)} parameter groups, member 0's "
                    f"{len(member_optimizers[0].param_groups)}."
                )
            group = optimizer.param_groups[index]
            try:
                group_names.append([names[k][id(p)] for p in group["params"]])
            except KeyError:
                raise ValueError(
                    f"member {k}'s optimizer (param_groups[{index}]) holds a parameter that is not one of "
                    "member_networks[{k}]'s."
                ) from None
            if group_names[k] != group_names[0]:
                raise ValueError(
                    f"param_groups[{index}] holds other parameters in member {k} than in member 0: "
                    f"{sorted(set(group_names[k]) ^ set(group_names[0]))[:5]}."
                )
            _check_same_settings(index, k, reference, group)
        settings = {key: value for key, value in reference.items() if key not in (*MEMBER_KEYS, "params")}
        values = {
            key: [_plain_number(o.param_groups[index][key]) for o in member_optimizers]
            for key in MEMBER_KEYS
            if key in reference
        }
        groups.append({**settings, **values, "params": [stacked[name] for name in group_names[0]]})
    optimizer = STACKED_OPTIMIZERS[kind](groups, num_members=count, exact=exact)
    optimizer.member_layout = layouts
    for k, member in enumerate(member_optimizers):
        if member.state:
            load_member_optimizer_state(optimizer, k, member.state_dict())
    return optimizer


def _member_layouts(member_optimizers: Sequence[Optimizer]) -> list[dict[str, Any]]:
    """Each group's keys in the members' order, and the Python type of each member value."""
    return [
        {
            "keys": [key for key in group if key != "params"],
            "types": {
                key: type(group[key])
                for key in MEMBER_KEYS
                if key in group and not isinstance(group[key], Tensor)
            },
        }
        for group in member_optimizers[0].param_groups
    ]


def _check_same_settings(index: int, k: int, reference: dict[str, Any], group: dict[str, Any]) -> None:
    keys = set(reference) | set(group)
    for key in sorted(keys - {"params", *MEMBER_KEYS}):
        if key not in reference or key not in group or not _same(reference[key], group[key]):
            raise ValueError(
                f"param_groups[{index}][{key!r}] differs between member 0 ({reference.get(key, '<missing>')!r}) "
                f"and member {k} ({group.get(key, '<missing>')!r}): the members of a stacked optimizer may "
                f"differ only in {list(MEMBER_KEYS)}."
            )
    for key in MEMBER_KEYS:
        if (key in reference) != (key in group):
            raise ValueError(f"param_groups[{index}][{key!r}] is set in only one of members 0 and {k}.")


def member_optimizer_state(optimizer: StackedOptimizer, k: int) -> dict[str, Any]:
    """Member k's optimizer state in torch's own state_dict format: equal to the state_dict of its
    own torch optimizer (that of `stacked_optimizer`'s member_optimizers[k]) after the same steps."""
    _check_member(optimizer, k)
    state: dict[int, dict[str, Any]] = {}
    groups = []
    start = 0
    for group, layout in zip(optimizer.param_groups, optimizer.member_layout, strict=True):
        packed = {}
        # a schedule created after this optimizer adds initial_lr at the end, as it does to torch's groups
        later = [key for key in MEMBER_KEYS if key in group and key not in layout["keys"]]
        for key in [*layout["keys"], *later]:
            if key in MEMBER_KEYS:
                packed[key] = layout["types"].get(key, float)(float(group[key][k]))
            else:
                packed[key] = copy.copy(group[key])
        packed["params"] = list(range(start, start + len(group["params"])))
        for offset, p in enumerate(group["params"]):
            member = optimizer._member_state(p, group, k)
            if member is not None:
                state[start + offset] = member
        start += len(group["params"])
        groups.append(packed)
    return {"state": state, "param_groups": groups}


def load_member_optimizer_state(optimizer: StackedOptimizer, k: int, state: dict[str, Any]) -> None:
    """Set member k's per-member group values (lr, weight_decay, initial_lr) and optimizer state
    from a state_dict of its own torch optimizer (the format `member_optimizer_state` returns).
    Its other hyperparameters must equal the stacked optimizer's (else a ValueError naming them)."""
    _check_member(optimizer, k)
    saved_groups = state["param_groups"]
    if len(saved_groups) != len(optimizer.param_groups):
        raise ValueError(
            f"member {k}'s optimizer state has {len(saved_groups)} parameter groups, the stacked optimizer "
            f"{len(optimizer.param_groups)}."
        )
    for index, (group, saved) in enumerate(zip(optimizer.param_groups, saved_groups, strict=True)):
        if len(saved["params"]) != len(group["params"]):
            raise ValueError(
                f"param_groups[{index}] of member {k}'s optimizer state has {len(saved['params'])} parameters, "
                f"the stacked optimizer's {len(group['params'])}."
            )
        for key, value in saved.items():
            if key == "params":
                continue
            if key in MEMBER_KEYS:
                if key not in group:
                    group[key] = group["lr"].clone()  # e.g. initial_lr, before a schedule set it
                with torch.no_grad():
                    group[key][k] = float(value)
            elif key not in group or not _same(group[key], value):
                raise ValueError(
                    f"param_groups[{index}][{key!r}] is {value!r} in member {k}'s optimizer state but "
                    f"{group.get(key, '<missing>')!r} in the stacked optimizer: only {list(MEMBER_KEYS)} may differ."
                )
        per_param = state["state"]
        for p, saved_index in zip(group["params"], saved["params"], strict=True):
            optimizer._load_member_state(p, group, k, per_param.get(saved_index))
    optimizer._nonzero_cache.clear()


def _check_member(optimizer: Optimizer, k: int) -> None:
    if not isinstance(optimizer, StackedOptimizer):
        raise TypeError(
            f"expected a stacked optimizer (trainlab.vectorised.optimizers), got {type(optimizer).__name__}."
        )
    if not 0 <= k < optimizer.num_members:
        raise IndexError(f"member {k} does not exist: this optimizer has {optimizer.num_members} members.")


def _member_op(
    method: Callable, values: list[float], target: Tensor, *operands: Tensor, keyword: str = ""
) -> None:
    """`method(target[k], *operands[k], value_k)` for each member k (the value as `keyword`, else
    positional), or once on the whole stack when every member has the same value: an elementwise
    kernel with the same Python scalar gives each element the same bits in the stacked tensor as
    in its member's slice (tested), in one kernel, not K."""

    def call(target: Tensor, operands: tuple[Tensor, ...], value: float) -> None:
        if keyword:
            method(target, *operands, **{keyword: value})
        else:
            method(target, *operands, value)

    if len(set(values)) == 1:
        call(target, operands, values[0])
        return
    for k, value in enumerate(values):
        call(target[k], tuple(operand[k] for operand in operands), value)


def _member_add(grad: Tensor, p: Tensor, alphas: list[float]) -> Tensor:
    """`grad.add(p, alpha=alphas[k])` for each member k (a new tensor; torch skips alpha 0)."""
    if len(set(alphas)) == 1:
        return grad.add(p, alpha=alphas[0]) if alphas[0] != 0 else grad.clone()
    out = grad.clone()
    for k, alpha in enumerate(alphas):
        if alpha != 0:
            torch.add(grad[k], p[k], alpha=alpha, out=out[k])
    return out


def _per_member(values: Tensor, like: Tensor) -> Tensor:
    """[K] values as [K, 1, ..., 1] in `like`'s dtype: one per member, over its trailing dimensions."""
    values = values.to(like.dtype) if values.dtype != torch.bool else values
    return values.view(-1, *([1] * (like.dim() - 1)))


def _plain(value: Tensor) -> Tensor:
    return value.as_subclass(Tensor) if isinstance(value, MemberValues) else value


def _plain_number(value: Any) -> float:
    return float(value) if isinstance(value, Tensor) else value


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return _same(a.tolist() if isinstance(a, Tensor) else a, b.tolist() if isinstance(b, Tensor) else b)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b
