"""Starting weights: published ones (torchvision, timm) read from the local cache, or a file of
the user's own (``--init``), copied into a model with a report of what was loaded.

Offline first: torchvision's weights are read from torch's hub cache
(``$TORCH_HOME/hub/checkpoints/<the published file name>``) and timm's from Hugging Face's
cache or a local file (timm's own ``pretrained_cfg_overlay=dict(file=...)``); nothing is
downloaded unless ``download`` is set and the network allows it. A file that is missing, not
a weights file, or of another architecture is one line naming the file and the fix.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import OverfitlabError, one_line
from .parts import Head, InputAdaptation

CHECKPOINT_NAMES = ("best.pt", "last.pt")  # an overfitlab run folder's, best first
# torchvision's and timm's ImageNet statistics, for weights that do not state their own.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class StateFile:
    """Tensors read from a weights file, and what it says of itself."""

    path: Path
    state: dict[str, torch.Tensor]
    meta: dict[str, Any] | None  # an overfitlab checkpoint's model_meta


def read_state(path: str | os.PathLike[str], flag: str = "--init") -> StateFile:
    """A run folder (its ``best.pt``), an overfitlab checkpoint, a ``.pt``/``.pth`` state dict
    (or a dict holding one under ``state_dict`` or ``model``), or a ``.safetensors`` file."""
    file = Path(path).expanduser()
    if file.is_dir():
        found = [file / name for name in CHECKPOINT_NAMES if (file / name).is_file()]
        if not found:
            raise OverfitlabError(
                f"{flag} {path}: the folder holds no best.pt or last.pt: pass an overfitlab run folder "
                "or a weights file"
            )
        file = found[0]
    if not file.is_file():
        raise OverfitlabError(f"{flag} {path}: no such file or folder: check the path")
    if file.suffix == ".safetensors":
        return StateFile(file, _safetensors(file, flag), None)
    try:
        loaded = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a file that is not its zip or pickle
        raise OverfitlabError(
            f"{flag} {path} is not a PyTorch weights file ({one_line(err)[:160]}): pass a state dict saved "
            "with torch.save(model.state_dict(), FILE), a .safetensors file or a run folder"
        ) from None
    meta = loaded.get("model_meta") if isinstance(loaded, dict) and "format" in loaded else None
    for key in ("model", "state_dict"):  # overfitlab's, Lightning's and timm's checkpoints
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
            break
    if (
        not isinstance(loaded, dict)
        or not loaded
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in loaded.items())
    ):
        raise OverfitlabError(
            f"{flag} {path} holds no state dict (a {type(loaded).__name__} of other values): save "
            "model.state_dict() with torch.save"
        )
    return StateFile(file, dict(loaded), meta)


def _safetensors(file: Path, flag: str) -> dict[str, torch.Tensor]:
    try:
        from safetensors.torch import load_file  # optional: comes with timm
    except ImportError:
        raise OverfitlabError(
            f"{flag} {file}: reading .safetensors needs the safetensors package: pip install safetensors"
        ) from None
    try:
        return dict(load_file(str(file)))
    except Exception as err:
        raise OverfitlabError(f"{flag} {file} is not a safetensors file ({one_line(err)[:160]})") from None


# --------------------------------------------------------------------------- loading
@dataclass(frozen=True)
class LoadReport:
    """What copying a state dict into a model did, tensor by tensor."""

    source: str
    loaded: int  # tensors copied
    new: tuple[str, ...]  # the model's tensors left as built (the head)
    unused: tuple[str, ...]  # the file's tensors the model has no place for
    parameters: int  # parameters copied (buffers such as batch norm's statistics aside)

    def note(self) -> str:
        parts = [f"{self.loaded} tensors ({self.parameters:,} parameters) loaded from {self.source}"]
        if self.new:
            parts.append(f"new: {_names(self.new)}")
        if self.unused:
            parts.append(f"unused from the file: {_names(self.unused)}")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "loaded": self.loaded,
            "new": list(self.new),
            "unused": list(self.unused),
            "parameters": self.parameters,
        }


def _names(names: tuple[str, ...], shown: int = 4) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _shape(tensor: torch.Tensor) -> str:
    return "[" + ", ".join(map(str, tensor.shape)) + "]"


def _aligned(
    state: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The file's keys named as the model names them: a wrapper's prefix (``model.`` of an
    adapted model, ``module.`` of DataParallel) taken off or put on."""
    if set(state) & set(target):
        return dict(state)
    for prefix in ("model.", "module.", "_orig_mod."):
        if all(k.startswith(prefix) for k in state):
            stripped = {k[len(prefix) :]: v for k, v in state.items()}
            if set(stripped) & set(target):
                return stripped
        added = {prefix + k: v for k, v in state.items()}
        if set(added) & set(target):
            return added
    return dict(state)


def _positional(
    state: dict[str, torch.Tensor], target: Mapping[str, torch.Tensor], in_head: Callable[[str], bool]
) -> dict[str, torch.Tensor]:
    """The file's tensors renamed by position when only their names differ: the same model with
    a layer that holds no weights put in or taken out (seed-cnn with and without dropout numbers
    its layers differently). Every tensor must have its counterpart's shape (the head's aside)."""
    if set(target) <= set(state) or len(state) != len(target):
        return state
    pairs = list(zip(state.items(), target.items(), strict=True))
    if all(v.shape == t.shape or in_head(k) for (_, v), (k, t) in pairs):
        return {k: v for (_, v), (k, _) in pairs}
    return state


def load_matching(
    model: nn.Module,
    file: StateFile,
    ref: str,
    head: Head | None,
    head_new: bool | None,
    flag: str = "--init",
) -> LoadReport:
    """Copy the file's tensors into ``model``. Every tensor but the head's must be there with its
    shape; the head's are left new when ``head_new`` (``--reinit-head``; None: when they do not
    fit, as published weights for other classes), else they too must fit. Anything else is one
    line naming the first tensors that disagree."""
    target = model.state_dict()
    in_head = head.holds if head is not None else (lambda key: False)
    state = _positional(_aligned(file.state, target), target, in_head)
    shared = [k for k in target if k in state]
    if head_new is None:  # published weights: a head for other classes is left new
        head_new = any(in_head(k) and state[k].shape != target[k].shape for k in shared)
    if not shared:
        raise OverfitlabError(
            f"{flag} {file.path}: none of its {len(state)} tensors is named as model {ref}'s (it holds "
            f"{_names(tuple(state), 2)}; the model {_names(tuple(target), 2)}): it holds weights of "
            "another architecture: pass the --model it was trained with"
        )
    misfits = [k for k in shared if state[k].shape != target[k].shape and not (head_new and in_head(k))]
    if misfits:
        key = misfits[0]
        head_only = head is not None and all(in_head(k) for k in misfits)
        fix = (
            "its head is for another number of classes: add --reinit-head to start the head anew"
            if head_only
            else "it holds weights of another architecture or size: pass the --model and options it was "
            "trained with"
        )
        raise OverfitlabError(
            f"{flag} {file.path}: {key} is {_shape(state[key])} there and {_shape(target[key])} in model "
            f"{ref}{f' (and {len(misfits) - 1} more)' if len(misfits) > 1 else ''}: {fix}"
        )
    missing = [k for k in target if k not in state and not in_head(k)]
    if missing:
        raise OverfitlabError(
            f"{flag} {file.path} lacks {_names(tuple(missing), 2)} of model {ref} ({len(missing)} tensors "
            "in all): it holds weights of another architecture: pass the --model it was trained with"
        )
    copied = {k: state[k] for k in shared if not (head_new and in_head(k))}
    with torch.no_grad():
        for key, value in copied.items():
            target[key].copy_(value)
    new = tuple(k for k in target if k not in copied)
    unused = tuple(k for k in state if k not in target)
    params = dict(model.named_parameters())
    numbers = sum(v.numel() for k, v in copied.items() if k in params)
    return LoadReport(str(file.path), len(copied), new, unused, numbers)


# --------------------------------------------------------------------------- published weights
def torchvision_weights(name: str, which: str, download: bool) -> tuple[StateFile, InputAdaptation]:
    """The state dict and input expectations of torchvision's published weights for ``name``."""
    import torchvision.models as tvm  # start-up: torchvision only for its models

    try:
        enum = tvm.get_model_weights(name)
    except (ValueError, KeyError):
        raise OverfitlabError(f"--pretrained: torchvision model {name} has no published weights") from None
    names = [w.name for w in enum]
    short = which.rsplit(".", 1)[-1]
    if which.lower() == "default":
        weights = enum.DEFAULT
    elif short in names:
        weights = enum[short]
    else:
        raise OverfitlabError(
            f"--pretrained {which}: torchvision model {name} has the weights {', '.join(names)}: pass one, "
            "or default"
        )
    file = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
    if not file.is_file():
        _download_or_explain(weights.url, file, f"torchvision's {weights}", download)
    transforms = weights.transforms()
    size = int(transforms.crop_size[0])
    adaptation = InputAdaptation(3, (size, size), tuple(transforms.mean), tuple(transforms.std))
    return read_state(file, "--pretrained"), adaptation


def _download_or_explain(url: str, file: Path, what: str, download: bool) -> None:
    fill = (
        f"copy {file.name} there from a machine that has it (~/.cache/torch/hub/checkpoints), or set "
        "TORCH_HOME to the folder that holds hub/checkpoints"
    )
    if not download:
        raise OverfitlabError(f"--pretrained: {what} not found at {file} (--no-download): {fill}")
    try:
        torch.hub.load_state_dict_from_url(
            url, model_dir=str(file.parent), progress=False, map_location="cpu"
        )
    except Exception as err:
        raise OverfitlabError(
            f"--pretrained: {what} not found at {file}, and downloading {url} failed "
            f"({one_line(err)[:120]}): {fill}"
        ) from None


def timm_pretrained(
    name: str, which: str, classes: int, arguments: Mapping[str, Any]
) -> tuple[nn.Module, InputAdaptation, str]:
    """A timm model with its published weights (``default``, a tag, or a local file given to
    timm through ``pretrained_cfg_overlay``), and what they expect; timm leaves the classifier
    new when the classes differ."""
    import timm  # optional: the timm extra

    file = Path(which).expanduser()
    local = which.lower() != "default" and (
        file.suffix in (".pth", ".pt", ".bin", ".safetensors") or file.exists()
    )
    if local and not file.is_file():
        raise OverfitlabError(f"--pretrained {which}: no such weights file: check the path")
    tagged = name if local or which.lower() == "default" else f"{name}.{which}"
    overlay: dict[str, Any] = {"pretrained_cfg_overlay": {"file": str(file.resolve())}} if local else {}
    try:
        model: nn.Module = timm.create_model(
            tagged, pretrained=True, num_classes=classes, in_chans=3, **overlay, **dict(arguments)
        )
    except RuntimeError as err:
        text = one_line(err)
        if "No pretrained weights" in text or "no pretrained" in text.lower():
            raise OverfitlabError(f"--pretrained: timm model {name} has no published weights") from None
        if local:
            raise OverfitlabError(_timm_misfit(name, file, classes)) from None
        raise OverfitlabError(
            f"--pretrained: timm could not load {tagged}'s weights ({text[:160]})"
        ) from None
    except Exception as err:
        where = file if local else "Hugging Face's cache (~/.cache/huggingface/hub; HF_HUB_CACHE sets it)"
        raise OverfitlabError(
            f"--pretrained: timm model {tagged}'s weights are not readable from {where} "
            f"({one_line(err)[:120]}): download them once where the network allows, or pass a "
            "local file: --pretrained FILE"
        ) from None
    config = getattr(model, "pretrained_cfg", {}) or {}
    size = tuple(config.get("input_size", (3, 224, 224)))[-2:]
    adaptation = InputAdaptation(
        3,
        (int(size[0]), int(size[1])),
        tuple(config.get("mean", IMAGENET_MEAN)),
        tuple(config.get("std", IMAGENET_STD)),
    )
    return model, adaptation, str(file) if local else f"timm's {tagged} weights"


def _timm_misfit(name: str, file: Path, classes: int) -> str:
    """Why timm refused a local file: the first tensors that disagree, found as ``--init`` would."""
    import timm  # optional: the timm extra

    model = timm.create_model(name, pretrained=False, num_classes=classes, in_chans=3)
    try:
        load_matching(model, read_state(file, "--pretrained"), f"timm:{name}", None, False, "--pretrained")
    except OverfitlabError as err:
        return str(err)
    return f"--pretrained {file}: timm could not load it into {name}: pass the file of this model"
