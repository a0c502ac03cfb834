"""Adam and AdamW with each group's parameters, gradients and moments in one flat buffer.

On CPU, ``torch.optim.Adam(foreach=True)`` runs every operation of the update
once per parameter tensor: about 70 small kernel calls a step for the
tutorial's CNN, a quarter of a training step on 8×8 digits. Here the
parameters of a group are views into one buffer and their gradients views into
another (autograd accumulates into them in place), so the same operations run
once per group over all its elements. The element-wise arithmetic is the same
(the same kernels, the same Python-float scalars), so the parameters after any
number of steps equal torch's foreach Adam bit for bit (tests/test_engine.py).

A parameter that gets no gradient in a step (an unused branch of a user's model)
is skipped by torch's Adam, where a flat buffer would step it on a zero gradient. A
hook on each parameter notes the gradients that arrived; the first step that misses
one hands its group to torch's own update for good, that parameter's gradient set to
None as torch would have it, so any model gets torch's numbers. If anything swaps
a parameter's or gradient's tensor for another (``model.to(...)``, assigning
``.grad``), ``step`` notices and falls back to torch's own update, which gives the
same numbers. ``state_dict`` and
``load_state_dict`` have torch's format: checkpoints move freely between the two.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, overload

import torch
from torch import nn

_BUFFERS = ("param", "grad", "exp_avg", "exp_avg_sq")
_STATE = ("step", "exp_avg", "exp_avg_sq")  # per-parameter state, all views of flat buffers


class FlatAdam(torch.optim.Adam):
    """``torch.optim.Adam`` (``decoupled_weight_decay=True``: AdamW), one flat update per group."""

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = False,
    ):
        super().__init__(
            params,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            decoupled_weight_decay=decoupled_weight_decay,
            foreach=True,
        )
        self._views: list[dict[str, list[torch.Tensor]] | None] = []
        self._flat: list[dict[str, torch.Tensor] | None] = []
        for group in self.param_groups:
            flat, views = _flatten(group["params"])
            self._flat.append(flat)
            self._views.append(views)
        # The parameters whose gradient autograd wrote since the last zero_grad (by id).
        self._arrived: set[int] = set()
        # A partial of a plain function, not a bound method: a model that is deep-copied or
        # pickled takes a copy of the set along, not this optimizer.
        note = functools.partial(_note_gradient, self._arrived)
        for group in self.param_groups:
            for p in group["params"]:
                p.register_post_accumulate_grad_hook(note)
        # Whether each group's state tensors are its views (set by _moments, cleared by loading).
        self._pointed = [False] * len(self.param_groups)

    # ------------------------------------------------------------------ checks
    def _intact(self, index: int) -> bool:
        views = self._views[index]
        if views is None:
            return False
        params = self.param_groups[index]["params"]
        return all(
            p.grad is g and p.data_ptr() == v.data_ptr()
            for p, g, v in zip(params, views["grad"], views["param"], strict=True)
        )

    def _moments(self, index: int) -> None:
        """Point each parameter's state (step counter, moments) at its slices of the flat
        buffers, keeping the values a loaded state brought."""
        views = self._views[index]
        assert views is not None  # called only for groups that have flat buffers
        for i, p in enumerate(self.param_groups[index]["params"]):
            state = self.state[p]
            for name in _STATE:
                if state.get(name) is not views[name][i]:
                    if name in state:
                        views[name][i].copy_(state[name])
                    state[name] = views[name][i]
        self._pointed[index] = True

    def _all_arrived(self, index: int) -> bool:
        """Whether every parameter of the group got a gradient since the last zero_grad. When
        one did not, the group leaves its flat buffers for torch's update, for good: torch
        skips a parameter whose grad is None, and counts steps per parameter."""
        params = self.param_groups[index]["params"]
        if all(id(p) in self._arrived for p in params):
            return True
        for p in params:
            if id(p) not in self._arrived:
                p.grad = None  # as torch's zero_grad would have left it
        self._views[index] = self._flat[index] = None
        return False

    # ------------------------------------------------------------------ optimizer API
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Zero the flat gradient buffers in place (the gradients stay views of them)."""
        self._arrived.clear()
        for index, flat in enumerate(self._flat):
            if flat is not None and self._intact(index):
                flat["grad"].zero_()
            else:
                for p in self.param_groups[index]["params"]:
                    p.grad = None if set_to_none else (p.grad.zero_() if p.grad is not None else None)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._pointed = [False] * len(self.param_groups)
        for index in range(len(self.param_groups)):
            if self._views[index] is not None:
                with torch.no_grad():
                    self._moments(index)

    @overload
    def step(self, closure: None = None) -> None: ...
    @overload
    def step(self, closure: Callable[[], float]) -> float: ...
    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        fallback = []
        for index, group in enumerate(self.param_groups):
            if not group["params"]:
                continue
            flat = self._flat[index]
            if (
                flat is None
                or not self._intact(index)
                or not self._all_arrived(index)
                or group["amsgrad"]
                or group["maximize"]
            ):
                fallback.append(index)
                continue
            if not self._pointed[index]:
                self._moments(index)
            _flat_update(group, flat)
        if fallback:
            self._torch_step(fallback)
        return loss

    def _torch_step(self, indices: list[int]) -> None:
        """torch's own update for these groups (same numbers, one kernel call per tensor)."""
        others = self.param_groups
        try:
            self.param_groups = [others[i] for i in indices]
            super().step()
        finally:
            self.param_groups = others


def _note_gradient(arrived: set[int], param: torch.Tensor) -> None:
    arrived.add(id(param))


def _flatten(
    params: list[nn.Parameter],
) -> tuple[dict[str, torch.Tensor], dict[str, list[torch.Tensor]]] | tuple[None, None]:
    """Move the parameters into one buffer (keeping each one's shape and strides) and give
    them gradient views of another; (None, None) when they cannot share one."""
    if not params or any(p.dtype != params[0].dtype or p.device != params[0].device for p in params):
        return None, None
    if any(not _dense(p) for p in params):
        return None, None
    total = sum(p.numel() for p in params)
    flat = {name: torch.zeros(total, dtype=params[0].dtype, device=params[0].device) for name in _BUFFERS}
    views: dict[str, list[torch.Tensor]] = {name: [] for name in _BUFFERS}
    offset = 0
    for p in params:
        for name, buffer in flat.items():
            views[name].append(buffer.as_strided(p.shape, p.stride(), offset))
        offset += p.numel()
    # torch's CPU step counters (float32 scalars, one per parameter) as one buffer: one
    # kernel counts every parameter's step.
    flat["step"] = torch.zeros(len(params), dtype=torch.float32)
    views["step"] = list(flat["step"].unbind())
    with torch.no_grad():
        for p, view in zip(params, views["param"], strict=True):
            view.copy_(p)
            p.data = view
    for p, grad in zip(params, views["grad"], strict=True):
        if p.grad is not None:
            grad.copy_(p.grad)
        p.grad = grad
    return flat, views


def _dense(t: torch.Tensor) -> bool:
    """Strides that cover exactly numel() elements without overlap (contiguous, channels_last)."""
    return t.is_contiguous() or (t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last))


def _flat_update(group: dict[str, Any], flat: dict[str, torch.Tensor]) -> None:
    """torch's _multi_tensor_adam (capturable=False), once over the whole group."""
    beta1, beta2 = group["betas"]
    lr, weight_decay, eps = group["lr"], group["weight_decay"], group["eps"]
    param, grad, exp_avg, exp_avg_sq = (flat[name] for name in _BUFFERS)
    steps = flat["step"]
    steps.add_(1.0)
    if weight_decay != 0:
        if group["decoupled_weight_decay"]:
            param.mul_(1 - lr * weight_decay)
        else:
            grad = grad.add(param, alpha=weight_decay)
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    step = steps[0].item()  # every parameter of a group has taken the same number of steps
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    step_size = (lr / bias_correction1) * -1
    denom = exp_avg_sq.sqrt().div_(bias_correction2**0.5).add_(eps)
    param.addcdiv_(exp_avg, denom, value=step_size)
