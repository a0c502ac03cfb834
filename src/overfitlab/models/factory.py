"""Models by reference: every kind of model enters through one seam.

``--model REF`` (config key ``model``) names a factory:

* a registered name: ``seed-cnn``, ``seed-fc``, ``seed-gap`` (the tutorial's CNN family,
  ``models.cnn``) or one a script registered with ``@register_model``;
* ``torchvision:NAME``: ``torchvision.models.get_model(NAME, weights=None, num_classes=K)``;
* ``timm:NAME``: ``timm.create_model(NAME, pretrained=False, num_classes=K, in_chans=C)``;
* ``package.module:function`` or ``path/to/file.py:function``: a user's own factory.

A factory is called as ``factory(in_shape=(C, H, W), num_classes=K, **keywords)`` with only
the keywords its signature accepts (all of them when it takes ``**kwargs``), and must return
an ``nn.Module`` whose output is ``(N, K)``: one forward of a two-image batch, in eval mode
and without gradients (so no random number is drawn), checks that before any training.

References travel as text (in config.toml, checkpoints and to a study's workers), so a
worker imports the factory itself; a file reference is made absolute when a run's config is
resolved, so a worker started elsewhere finds the same file.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import OverfitlabError, did_you_mean, one_line
from .cnn import PRESETS
from .parts import InputAdaptation
from .registry import Factory, list_models, registered

TORCHVISION = "torchvision:"
TIMM = "timm:"
# What the study's remedies and the CLI's flags call the built-in CNN's options. A user factory
# gets them as keywords when its signature takes them; otherwise --dropout sets the p of every
# nn.Dropout in the model and the others are refused, naming the keyword to add.
ARCHITECTURE_OPTIONS = ("hidden", "blocks", "batchnorm", "dropout", "head", "fc_width")
# Passed by overfitlab itself, never taken from model_args.
_CALL_KEYWORDS = ("in_shape", "num_classes")


@dataclass(frozen=True)
class BuiltModel:
    """A model built from a reference, with what was done to build it."""

    module: nn.Module
    ref: str
    arguments: dict[str, Any]  # the keywords the factory was called with (in_shape, classes aside)
    own: bool  # one of overfitlab's presets: its fast dropout, flat Adam and layout apply
    notes: tuple[str, ...] = field(default=())  # adaptations, shown by summary and train
    adaptation: InputAdaptation | None = None  # how images are fed to starting weights (models.parts)
    start: dict[str, Any] | None = None  # where the starting weights came from (weights.LoadReport)


# --------------------------------------------------------------------------- references
def kind_of(ref: str) -> str:
    """``registered``, ``torchvision``, ``timm`` or ``python`` (a module or file reference)."""
    if ref.startswith(TORCHVISION):
        return "torchvision"
    if ref.startswith(TIMM):
        return "timm"
    if ":" in ref:
        return "python"
    return "registered"


def _split_python(ref: str) -> tuple[str, str]:
    where, _, attr = ref.rpartition(":")
    if not where or not attr:
        raise OverfitlabError(
            f"bad model reference {ref!r}: write package.module:function or path/to/file.py:function"
        )
    return where, attr


def _is_file(where: str) -> bool:
    return where.endswith(".py") or "/" in where or "\\" in where


def canonical(ref: str) -> str:
    """The reference as saved: a file made absolute; a factory registered by an importable
    module becomes ``module:function``, which a study's worker can import."""
    kind = kind_of(ref)
    if kind == "python":
        where, attr = _split_python(ref)
        if _is_file(where):
            return f"{Path(where).expanduser().resolve()}:{attr}"
        return ref
    if kind == "registered":
        factory = registered(ref)
        if factory is not None and ref not in PRESETS:
            module = getattr(factory, "__module__", "__main__")
            qualname = getattr(factory, "__qualname__", "")
            if module != "__main__" and "<" not in qualname:
                return f"{module}:{qualname}"
    return ref


def _import_file(path: Path, ref: str) -> Any:
    if not path.is_file():
        raise OverfitlabError(f"model file {path} not found (--model {ref}): check the path")
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    name = f"overfitlab_user_{path.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise OverfitlabError(f"cannot import {path} (--model {ref}): it must be a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        del sys.modules[name]
        raise OverfitlabError(f"importing {path} failed ({one_line(err)}): fix the file") from None
    return module


def _import_module(where: str, ref: str) -> Any:
    try:
        return importlib.import_module(where)
    except ModuleNotFoundError as err:
        missing = err.name or where
        raise OverfitlabError(
            f"cannot import module {where!r} for --model {ref} (no module named {missing!r}): check "
            "the name and that it is on the Python path, or pass path/to/file.py:function"
        ) from None
    except Exception as err:
        raise OverfitlabError(f"importing {where} failed ({one_line(err)}): fix the module") from None


def _python_factory(ref: str) -> Factory:
    where, attr = _split_python(ref)
    module = _import_file(Path(where).expanduser(), ref) if _is_file(where) else _import_module(where, ref)
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            names = [n for n in dir(target) if not n.startswith("_")]
            raise OverfitlabError(
                f"{where} has no attribute {part!r} (--model {ref}): {did_you_mean(part, names)}"
                "name a function that returns an nn.Module"
            )
        target = getattr(target, part)
    if not callable(target):
        raise OverfitlabError(
            f"{ref} is a {type(target).__name__}, not a function: name a factory that returns an nn.Module"
        )
    factory: Factory = target
    return factory


def unknown_model_error(ref: str) -> OverfitlabError:
    return OverfitlabError(
        f"unknown model {ref!r}: {did_you_mean(ref, list_models())}choose one of "
        f"{', '.join(list_models())}, or torchvision:NAME, timm:NAME, package.module:function, "
        "path/to/file.py:function"
    )


def check_reference(ref: str) -> None:
    """The cheap checks of a reference (no import): its form, and a registered name known."""
    kind = kind_of(ref)
    if kind == "registered" and registered(ref) is None:
        raise unknown_model_error(ref)
    if kind == "python":
        _split_python(ref)
    if kind in ("torchvision", "timm") and not ref.split(":", 1)[1]:
        raise OverfitlabError(f"bad model reference {ref!r}: write {kind}:NAME, e.g. {kind}:resnet18")


# --------------------------------------------------------------------------- signatures
def accepted_keywords(factory: Factory) -> frozenset[str] | None:
    """The keywords a factory takes; None when it takes any (``**kwargs``)."""
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: pass what is given
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return frozenset(
        p.name
        for p in parameters
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    )


def keyword_defaults(ref: str) -> dict[str, Any]:
    """The defaults of the keywords a registered or Python factory declares (empty for
    torchvision and timm, whose builders take ``**kwargs``)."""
    kind = kind_of(ref)
    if kind in ("torchvision", "timm"):
        return {}
    factory = _factory(ref)
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return {}
    return {
        p.name: p.default
        for p in parameters
        if p.default is not inspect.Parameter.empty and p.name not in _CALL_KEYWORDS
    }


def factory_of(ref: str) -> Factory:
    """The function a registered name or Python reference names (imported)."""
    return _factory(ref)


def _factory(ref: str) -> Factory:
    kind = kind_of(ref)
    if kind == "python":
        return _python_factory(ref)
    factory = registered(ref)
    if factory is None:
        raise unknown_model_error(ref)
    return factory


# --------------------------------------------------------------------------- building
def build_model(
    ref: str,
    in_shape: tuple[int, int, int],
    num_classes: int,
    arguments: Mapping[str, Any] | None = None,
    remedies: Mapping[str, Any] | None = None,
    dropout_impl: str = "torch",
) -> BuiltModel:
    """Build the model ``ref`` names for images of shape (C, H, W) and ``num_classes`` classes.

    ``arguments`` (``--model-arg``, ``[model.args]``) must all be taken by the factory;
    ``remedies`` (the architecture options: ``--dropout``, ``--batchnorm``, ...) are passed
    when the factory takes them, else ``dropout`` sets every ``nn.Dropout``'s p and the
    others are one-line errors."""
    arguments = dict(arguments or {})
    remedies = {k: v for k, v in (remedies or {}).items() if v is not None}
    kind = kind_of(ref)
    in_shape = (int(in_shape[0]), int(in_shape[1]), int(in_shape[2]))
    if kind == "torchvision":
        module, notes = _torchvision(ref, in_shape, num_classes, arguments)
        module, more = apply_remedies(module, ref, remedies, accepted=frozenset())
        return BuiltModel(checked(module, ref, in_shape, num_classes), ref, arguments, False, notes + more)
    if kind == "timm":
        module = _timm(ref, in_shape, num_classes, arguments)
        module, more = apply_remedies(module, ref, remedies, accepted=frozenset())
        return BuiltModel(checked(module, ref, in_shape, num_classes), ref, arguments, False, more)
    factory = _factory(ref)
    own = ref in PRESETS and registered(ref) is factory
    accepted = accepted_keywords(factory)

    def takes(key: str) -> bool:
        return accepted is None or key in accepted

    unknown = [key for key in arguments if not takes(key) or key in _CALL_KEYWORDS]
    if unknown:
        raise OverfitlabError(
            f"model {ref} takes no keyword {unknown[0]!r} (--model-arg {unknown[0]}=...): "
            f"{did_you_mean(unknown[0], sorted(accepted or ()))}it takes "
            f"{', '.join(sorted((accepted or set()) - set(_CALL_KEYWORDS))) or 'no keyword'}"
        )
    keywords = dict(arguments)
    passed_remedies = {k: v for k, v in remedies.items() if takes(k)}
    keywords.update(passed_remedies)
    call: dict[str, Any] = {}
    if takes("in_shape"):
        call["in_shape"] = in_shape
    if takes("num_classes"):
        call["num_classes"] = num_classes
    # Fast dropout only in models overfitlab builds: a factory that names the keyword.
    if accepted is not None and "dropout_impl" in accepted and "dropout_impl" not in keywords:
        call["dropout_impl"] = dropout_impl
    try:
        module = factory(**call, **keywords)
    except OverfitlabError:
        raise
    except Exception as err:
        raise OverfitlabError(
            f"model factory {ref} raised {one_line(err)}: fix the factory or its --model-arg values"
        ) from None
    if not isinstance(module, nn.Module):
        raise OverfitlabError(
            f"model factory {ref} returned a {type(module).__name__}, not an nn.Module: return the model"
        )
    rest = {k: v for k, v in remedies.items() if k not in passed_remedies}
    module, notes = apply_remedies(module, ref, rest, accepted=accepted or frozenset())
    return BuiltModel(checked(module, ref, in_shape, num_classes), ref, keywords, own, notes)


def apply_remedies(
    module: nn.Module, ref: str, remedies: Mapping[str, Any], accepted: frozenset[str]
) -> tuple[nn.Module, tuple[str, ...]]:
    """The architecture options the factory did not take: dropout by module, others refused."""
    notes: list[str] = []
    for key, value in remedies.items():
        if key == "dropout":
            layers = [m for m in module.modules() if isinstance(m, nn.Dropout)]
            for layer in layers:
                layer.p = float(value)
            if layers:
                notes.append(f"--dropout {value} set p of {len(layers)} nn.Dropout layer(s)")
            elif value > 0:
                notes.append(_dropout_before_head(module, ref, float(value)))
            continue
        flag = "--" + key.replace("_", "-")
        raise OverfitlabError(
            f"{flag}: model {ref}'s factory takes no {key!r} keyword: add a {key} parameter to it, "
            f"or leave {flag} out"
        )
    return module, tuple(notes)


def _dropout_before_head(module: nn.Module, ref: str, p: float) -> str:
    """A model without dropout layers (a ResNet) gets one before its last linear layer, the
    classifier: where timm's ``drop_rate`` puts it."""
    found: tuple[nn.Module, str, str] | None = None  # (parent, attribute, dotted name)
    for owner_name, owner in module.named_modules():
        for child_name, child in owner.named_children():
            if isinstance(child, nn.Linear):
                found = (owner, child_name, f"{owner_name}.{child_name}" if owner_name else child_name)
    if found is None:
        raise OverfitlabError(
            f"--dropout {p}: model {ref} has no nn.Dropout and no nn.Linear layer, and its factory takes "
            "no 'dropout' keyword: add a dropout parameter to the factory"
        )
    owner, child_name, where = found
    setattr(owner, child_name, nn.Sequential(nn.Dropout(p), getattr(owner, child_name)))
    return f"--dropout {p}: nn.Dropout({p}) inserted before the last linear layer, {where}"


def checked(module: nn.Module, ref: str, in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """One forward of two blank images: the output must be (2, num_classes)."""
    was_training = module.training
    try:
        with torch.no_grad():
            module.eval()
            device = next((p.device for p in module.parameters()), torch.device("cpu"))
            output = module(torch.zeros(2, *in_shape, device=device))
    except Exception as err:
        raise OverfitlabError(
            f"model {ref} fails on inputs of shape {list(in_shape)} ({one_line(err)}): "
            "check --image-size and --channels, or the model"
        ) from None
    finally:
        module.train(was_training)
    shape = tuple(output.shape) if isinstance(output, torch.Tensor) else None
    if shape != (2, num_classes):
        got = f"shape {list(shape)}" if shape is not None else f"a {type(output).__name__}"
        raise OverfitlabError(
            f"model {ref} returns {got} for a batch of 2, not [2, {num_classes}] (one logit per class): "
            "make it return (N, classes)"
        )
    return module


def _torchvision(
    ref: str, in_shape: tuple[int, int, int], num_classes: int, arguments: Mapping[str, Any]
) -> tuple[nn.Module, tuple[str, ...]]:
    import torchvision.models as tvm

    name = ref[len(TORCHVISION) :]
    names = tvm.list_models(module=tvm)  # the classification builders
    if name not in names:
        raise OverfitlabError(
            f"unknown torchvision classification model {name!r}: {did_you_mean(name, names, n=3)}"
            "see torchvision.models.list_models(module=torchvision.models)"
        )
    try:
        module = tvm.get_model(name, weights=None, num_classes=num_classes, **arguments)
    except Exception as err:
        raise OverfitlabError(
            f"torchvision model {name} cannot be built ({one_line(err)}): check its --model-arg values"
        ) from None
    notes = _adapt_first_conv(module, in_shape[0])
    return module, notes


def _adapt_first_conv(module: nn.Module, channels: int) -> tuple[str, ...]:
    """A model built for 3-channel images fed C channels: its first convolution is replaced by
    one of the same shape with C input channels (freshly initialised: no weights are loaded)."""
    for owner in module.modules():
        for child_name, child in owner.named_children():
            if isinstance(child, nn.Conv2d):
                if child.in_channels == channels:
                    return ()
                conv = nn.Conv2d(
                    channels,
                    child.out_channels,
                    child.kernel_size,  # type: ignore[arg-type]
                    child.stride,  # type: ignore[arg-type]
                    child.padding,  # type: ignore[arg-type]
                    child.dilation,  # type: ignore[arg-type]
                    child.groups if child.groups == 1 else channels,
                    bias=child.bias is not None,
                    padding_mode=child.padding_mode,
                )
                setattr(owner, child_name, conv)
                before = child.weight.numel()
                return (
                    f"first convolution {child_name} adapted from {child.in_channels} to {channels} "
                    f"input channels ({before:,} → {conv.weight.numel():,} weights)",
                )
    return ()


def _timm(
    ref: str, in_shape: tuple[int, int, int], num_classes: int, arguments: Mapping[str, Any]
) -> nn.Module:
    try:
        import timm
    except ImportError:
        raise OverfitlabError(
            f"--model {ref} needs timm, which is not installed: pip install 'overfitlab[timm]'"
        ) from None
    name = ref[len(TIMM) :]
    names = timm.list_models()
    if name not in names:
        raise OverfitlabError(
            f"unknown timm model {name!r}: {did_you_mean(name, names, n=3)}see timm.list_models()"
        )
    try:
        module: nn.Module = timm.create_model(
            name, pretrained=False, num_classes=num_classes, in_chans=in_shape[0], **arguments
        )
    except Exception as err:
        raise OverfitlabError(
            f"timm model {name} cannot be built ({one_line(err)}): check its --model-arg values"
        ) from None
    return module


def create_model(
    name: str,
    in_shape: tuple[int, int, int] = (1, 28, 28),
    classes: int = 10,
    dropout_impl: str = "torch",
    **overrides: Any,
) -> nn.Module:
    """Any model by reference (a registered name, ``torchvision:NAME``, ``timm:NAME``,
    ``module:function``, ``file.py:function``), with keyword arguments for its factory;
    None keeps the factory's default."""
    given = {k: v for k, v in overrides.items() if v is not None}
    return build_model(name, in_shape, classes, given, dropout_impl=dropout_impl).module
