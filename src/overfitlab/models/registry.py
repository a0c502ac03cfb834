"""Model factories by name (timm's ``_registry``): ``@register_model``, ``list_models``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from torch import nn

# A factory is called as factory(in_shape=(C, H, W), num_classes=K, **keywords) and returns
# an nn.Module whose output is (N, K): timm's create_model contract.
Factory = Callable[..., nn.Module]
_REGISTRY: dict[str, Factory] = {}

_F = TypeVar("_F", bound=Factory)


def register_model(name: str) -> Callable[[_F], _F]:
    """Register a model factory under ``name`` (timm's ``@register_model``); ``--model name``
    then builds it. A factory registered in a script is known in that process only: a study's
    workers import a factory by its reference, ``package.module:function`` or ``file.py:function``."""

    def decorate(fn: _F) -> _F:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = fn
        return fn

    return decorate


def registered(name: str) -> Factory | None:
    return _REGISTRY.get(name)


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
