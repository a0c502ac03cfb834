"""A model built with its starting weights: random (``factory.build_model``), published
(``--pretrained``) or the user's own (``--init``), its head drawn anew on request, its input
adapted to what the weights expect; and the same model rebuilt for a checkpoint's weights.

What was done is in the ``BuiltModel``: ``notes`` (shown by ``train`` and in summaries),
``adaptation`` (recorded in checkpoints, so ``evaluate`` and ``load_model`` feed images the
same way) and ``start`` (which tensors were loaded, which are new, from which file).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..errors import OverfitlabError
from ..textvalues import parse_image_size
from .cnn import PRESETS
from .factory import TIMM, BuiltModel, apply_remedies, build_model, checked, kind_of
from .parts import Adapted, InputAdaptation, find_head, head_or_error, reinitialize
from .weights import LoadReport, load_matching, read_state, timm_pretrained, torchvision_weights


@dataclass(frozen=True)
class Start:
    """Where a model's weights start: the options ``--pretrained``, ``--init``, ``--input-size``,
    ``--reinit-head`` and ``--download`` as plain values."""

    pretrained: str | None = None
    init: str | None = None
    input_size: str | None = None  # None: the weights' size; "native": the images' own
    reinit_head: bool = False
    download: bool = True


def build_started(
    ref: str,
    in_shape: tuple[int, int, int],
    classes: int,
    arguments: Mapping[str, Any] | None = None,
    remedies: Mapping[str, Any] | None = None,
    dropout_impl: str = "torch",
    start: Start = Start(),
) -> BuiltModel:
    """``factory.build_model`` with the starting weights ``start`` names."""
    if start.pretrained:
        built = _published(ref, in_shape, classes, arguments or {}, remedies or {}, dropout_impl, start)
    elif start.init:
        built = _own(ref, in_shape, classes, arguments, remedies, dropout_impl, start)
    else:
        built = build_model(ref, in_shape, classes, arguments, remedies, dropout_impl)
    if start.reinit_head:
        built = _reinitialized(built, classes)
    return built


def rebuild_started(
    ref: str,
    in_shape: tuple[int, int, int],
    classes: int,
    arguments: Mapping[str, Any] | None,
    remedies: Mapping[str, Any] | None,
    adaptation: InputAdaptation | None,
) -> BuiltModel:
    """The model a run trained, for its checkpoint's weights: no weights loaded, the input
    adapted as the checkpoint records."""
    if adaptation is None:
        return build_model(ref, in_shape, classes, arguments, remedies)
    built = build_model(ref, adaptation.model_shape(in_shape), classes, arguments, remedies)
    return _wrapped(built, in_shape, classes, adaptation, None)


def _adaptation(
    weights: InputAdaptation, in_shape: tuple[int, int, int], size: str | None
) -> InputAdaptation:
    """The weights' expectations, their size replaced by ``--input-size``."""
    if size == "native":
        return dataclasses.replace(weights, size=None)
    if size is not None:
        return dataclasses.replace(weights, size=parse_image_size(size))
    return weights


def _wrapped(
    built: BuiltModel,
    in_shape: tuple[int, int, int],
    classes: int,
    adaptation: InputAdaptation,
    report: LoadReport | None,
) -> BuiltModel:
    module = checked(Adapted(built.module, adaptation), built.ref, in_shape, classes)
    notes = (*built.notes, *((report.note(),) if report else ()), *adaptation.notes(in_shape))
    start = report.to_dict() if report else None
    return dataclasses.replace(built, module=module, notes=notes, adaptation=adaptation, start=start)


def _published(
    ref: str,
    in_shape: tuple[int, int, int],
    classes: int,
    arguments: Mapping[str, Any],
    remedies: Mapping[str, Any],
    dropout_impl: str,
    start: Start,
) -> BuiltModel:
    kind = kind_of(ref)
    which = start.pretrained or "default"
    if kind == "torchvision":
        file, weights = torchvision_weights(ref.split(":", 1)[1], which, start.download)
        adaptation = _adaptation(weights, in_shape, start.input_size)
        built = build_model(ref, adaptation.model_shape(in_shape), classes, arguments, remedies, dropout_impl)
        head = find_head(built.module, classes)
        report = load_matching(built.module, file, ref, head, None, "--pretrained")
        return _wrapped(built, in_shape, classes, adaptation, report)
    if kind == "timm":
        model, weights, source = timm_pretrained(ref[len(TIMM) :], which, classes, arguments)
        adaptation = _adaptation(weights, in_shape, start.input_size)
        model, notes = apply_remedies(
            model, ref, {k: v for k, v in remedies.items() if v is not None}, frozenset()
        )
        built = BuiltModel(model, ref, dict(arguments), False, notes)
        return _wrapped(built, in_shape, classes, adaptation, _timm_report(model, source, classes))
    what = "a preset of overfitlab" if ref in PRESETS else "not a torchvision or timm model"
    raise OverfitlabError(
        f"--pretrained: model {ref} has no published weights ({what}): train it on a larger data set "
        "with overfitlab and pass that run's folder with --init"
    )


def _timm_report(model: nn.Module, source: str, classes: int) -> LoadReport:
    """timm loaded every tensor but its classifier's, which it leaves new for other classes."""
    state = model.state_dict()
    published = int((getattr(model, "pretrained_cfg", {}) or {}).get("num_classes", classes))
    head = find_head(model, classes)
    new = tuple(k for k in state if head is not None and published != classes and head.holds(k))
    params = dict(model.named_parameters())
    numbers = sum(v.numel() for k, v in state.items() if k not in new and k in params)
    return LoadReport(source, len(state) - len(new), new, (), numbers)


def _own(
    ref: str,
    in_shape: tuple[int, int, int],
    classes: int,
    arguments: Mapping[str, Any] | None,
    remedies: Mapping[str, Any] | None,
    dropout_impl: str,
    start: Start,
) -> BuiltModel:
    assert start.init is not None
    file = read_state(start.init)
    recorded = (file.meta or {}).get("input")
    adaptation = InputAdaptation.from_dict(recorded) if recorded else None
    shape = adaptation.model_shape(in_shape) if adaptation else in_shape
    built = build_model(ref, shape, classes, arguments, remedies, dropout_impl)
    # A run that fine-tuned published weights fed them adapted images: so does this one.
    module: nn.Module = Adapted(built.module, adaptation) if adaptation else built.module
    head = find_head(module, classes)
    report = load_matching(module, file, ref, head, start.reinit_head)
    if adaptation is not None:
        return _wrapped(built, in_shape, classes, adaptation, report)
    return dataclasses.replace(built, notes=(*built.notes, report.note()), start=report.to_dict())


def _reinitialized(built: BuiltModel, classes: int) -> BuiltModel:
    """The head drawn anew, unless loading already left it new."""
    head = head_or_error(built.module, classes, built.ref, "--reinit-head")
    if built.start is not None and any(map(head.holds, built.start["new"])):
        return built
    drawn = reinitialize(head.module)
    note = f"head {head.name} drawn anew ({drawn} tensors)"
    return dataclasses.replace(built, notes=(*built.notes, note))
