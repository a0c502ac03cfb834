"""A run's parts built from its Config: resolved recipe, model, optimizer, early stopping, data, loss."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config, data_options
from ..data.batches import Scaling, prepare
from ..data.dataset import DataSet
from ..data.edits import apply_edits, read_edits, select_classes
from ..data.registry import load_dataset
from ..data.split import Split
from ..errors import OverfitlabError
from ..models.cnn import PRESETS
from ..models.factory import (
    ARCHITECTURE_OPTIONS,
    BuiltModel,
    accepted_keywords,
    canonical,
    factory_of,
    keyword_defaults,
    kind_of,
)
from ..models.parts import Block, Head, InputAdaptation, body_blocks, head_or_error
from ..models.starting import Start, build_started, rebuild_started
from ..textvalues import parse_classes
from ..training.callbacks import Callback
from ..training.early_stopping import EarlyStopping
from ..training.finetune import Unfreezing, group_notes, head_only_epochs, layer_groups
from ..training.flat_adam import FlatAdam
from ..training.progress import EpochProgress, in_notebook
from ..training.regularizers import is_penalized, param_groups
from ..training.trainer import LossFn


def memory_format_for(config: Config, device: torch.device, own: bool = True) -> torch.memory_format:
    if config.memory_format == "channels_last":
        return torch.channels_last
    if config.memory_format == "contiguous":
        return torch.contiguous_format
    # auto: channels_last on CPU for every preset and data set, 8×8 digits included:
    # oneDNN's pooling and batch norm are 1.5-5× faster in it and masks do not depend
    # on it (measured in benchmarks/). Elsewhere, and for models overfitlab did not build
    # (where it was not measured), torch's default layout.
    return torch.channels_last if device.type == "cpu" and own else torch.contiguous_format


# --------------------------------------------------------------------------- building blocks
def architecture(config: Config) -> dict[str, Any]:
    """The CNN options the config sets (None: the factory's default)."""
    return {k: getattr(config, k) for k in ARCHITECTURE_OPTIONS if getattr(config, k) is not None}


def start_of(config: Config) -> Start:
    """Where the config's weights start (``models.starting``); options that contradict each
    other are one line (each value alone is checked by ``config.validate``)."""
    if config.pretrained and config.init:
        raise OverfitlabError("--pretrained and --init both set the starting weights: pass one")
    if config.freeze and config.freeze_epochs:
        raise OverfitlabError(
            "--freeze keeps the body frozen all run, --freeze-epochs N unfreezes it after N: pass one"
        )
    if config.pretrained and config.normalize:
        raise OverfitlabError(
            "--pretrained feeds images with the weights' own mean and std: drop --normalize"
        )
    return Start(config.pretrained, config.init, config.input_size, config.reinit_head, config.download)


def build_model(config: Config, image_shape: tuple[int, int, int], classes: int) -> BuiltModel:
    """The config's model, by reference (``models.factory``), for this input and classes, with
    its starting weights (``--pretrained``, ``--init``)."""
    return build_started(
        config.model,
        image_shape,
        classes,
        config.model_args,
        remedies=architecture(config),
        dropout_impl=config.dropout_impl,
        start=start_of(config),
    )


def rebuild_model(
    config: Config, image_shape: tuple[int, int, int], classes: int, adaptation: InputAdaptation | None
) -> BuiltModel:
    """The model a run trained, built for its checkpoint's weights (none loaded)."""
    return rebuild_started(
        config.model, image_shape, classes, config.model_args, architecture(config), adaptation
    )


# --------------------------------------------------------------------------- fine-tuning
FINE_TUNING = ("freeze", "freeze_epochs", "unfreeze_every", "body_lr_ratio", "l2_sp")


def tuning_flag(config: Config) -> str | None:
    """The flag of the first fine-tuning option the config sets (None: none)."""
    defaults = Config()
    for name in FINE_TUNING:
        if getattr(config, name) != getattr(defaults, name):
            return "--" + name.replace("_", "-")
    return None


@dataclass(frozen=True)
class Parts:
    """A model's head and body blocks, as fine-tuning uses them (``models.parts``)."""

    head: Head
    blocks: tuple[Block, ...]


def model_parts(config: Config, model: nn.Module, classes: int) -> Parts | None:
    """The head and blocks when the config fine-tunes; one line when the model has no head."""
    flag = tuning_flag(config)
    if flag is None:
        return None
    head = head_or_error(model, classes, config.model, flag)
    return Parts(head, tuple(body_blocks(model, head)))


def unfreezing(config: Config, parts: Parts | None) -> Unfreezing | None:
    """The freezing schedule's callback (None: nothing is ever frozen)."""
    if parts is None or not (config.freeze or head_only_epochs(config.freeze_epochs, config.unfreeze_every)):
        return None
    return Unfreezing(parts.blocks, config.freeze, config.freeze_epochs, config.unfreeze_every)


def tuning_notes(optimizer: torch.optim.Optimizer, schedule: Unfreezing | None) -> tuple[str, ...]:
    """What the summary says of fine-tuning: the groups' rates, and the schedule."""
    return (group_notes(optimizer.param_groups), *((schedule.note(),) if schedule else ()))


def anchors(config: Config, parts: Parts | None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """L2-SP's (w, w₀): the body's penalized weights and their starting values."""
    if parts is None or not config.l2_sp:
        return []
    return [
        (p, p.detach().clone())
        for block in parts.blocks
        for p in block.params
        if is_penalized(p, config.penalize_all)
    ]


def resolved(config: Config) -> Config:
    """The config made explicit for config.toml: the model reference canonical (a file made
    absolute), and the factory's defaults for the CNN options and arguments it declares."""
    ref = canonical(config.model)
    defaults = keyword_defaults(ref)
    changes: dict[str, Any] = {
        k: defaults[k] for k in ARCHITECTURE_OPTIONS if getattr(config, k) is None and k in defaults
    }
    saved = {
        k: v
        for k, v in defaults.items()
        if k not in ARCHITECTURE_OPTIONS and k != "dropout_impl" and _tomlable(v)
    }
    if ref not in PRESETS:  # the presets' keywords are the CNN options above
        changes["model_args"] = {**saved, **config.model_args}
    for key in ("exclude", "relabel", "init"):  # a study's worker or a resumed run reads the same file
        if getattr(config, key):
            changes[key] = str(Path(getattr(config, key)).expanduser().resolve())
    if config.pretrained and Path(config.pretrained).expanduser().is_file():  # timm's local file
        changes["pretrained"] = str(Path(config.pretrained).expanduser().resolve())
    return config.replace(model=ref, dataset=absolute_dataset(config.dataset), **changes)


def absolute_dataset(name: str) -> str:
    """``folder:PATH`` and ``arrays:FILE`` with the path made absolute: a study's worker, or a
    resumed run started elsewhere, reads the same files."""
    for prefix in ("folder:", "arrays:"):
        if name.startswith(prefix):
            return prefix + str(Path(name[len(prefix) :]).expanduser().resolve())
    return name


def model_refusal(config: Config) -> str | None:
    """Why the config's model cannot take its CNN options (None: it can), as a study says it.
    A factory's signature answers without building; a model that would get --dropout through
    its nn.Dropout layers is built once, on the data set's shape, to see that it has some."""

    options = architecture(config)
    if not options or config.model in PRESETS:
        return None
    # torchvision's and timm's builders take **kwargs but pass none of these options on.
    library = kind_of(config.model) in ("torchvision", "timm")
    accepted = frozenset() if library else accepted_keywords(factory_of(config.model))
    if accepted is None:
        return None
    missing = [k for k in options if k not in accepted and k != "dropout"]
    if missing:
        return (
            f"model {config.model} takes no {', '.join(missing)} keyword (the variant sets "
            f"{', '.join('--' + k.replace('_', '-') for k in missing)})"
        )
    if "dropout" in options and "dropout" not in accepted:
        data = load_dataset(config.dataset, options=data_options(config))
        try:
            rebuild_model(config, data.image_shape, data.classes, None)
        except OverfitlabError as err:
            return str(err)
    return None


def _tomlable(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_tomlable(v) for v in value)
    return isinstance(value, (bool, int, float, str))


def build_optimizer(config: Config, model: nn.Module, parts: Parts | None = None) -> torch.optim.Optimizer:
    """The config's optimizer over the model's decay and no-decay groups (fine-tuning: per block,
    with discriminative rates); Adam on CPU is FlatAdam, torch's numbers for any model (a
    parameter without a gradient, a frozen one too, is skipped)."""
    if parts is not None:
        head = tuple(parts.head.module.parameters())
        blocks = [(b.name, b.params) for b in parts.blocks]
        groups = layer_groups(
            head, blocks, config.lr, config.body_lr_ratio, config.weight_decay, config.penalize_all
        )
    else:
        groups = param_groups(model, config.weight_decay, include_all=config.penalize_all)
    cpu = all(p.device.type == "cpu" for p in model.parameters())
    return optimizer_for(config, groups, flat=cpu)


def optimizer_for(config: Config, groups: list[dict[str, Any]], flat: bool) -> torch.optim.Optimizer:
    """The config's optimizer over these parameter groups; with ``flat``, Adam is FlatAdam."""
    # foreach: one multi-tensor kernel per operation instead of a Python loop over the
    # parameters; on CPU FlatAdam goes further, one call per group; both bit for bit the
    # plain loop's updates. fused=True is faster than foreach but its numbers differ.
    if config.optimizer in ("adam", "adamw"):
        decoupled = config.optimizer == "adamw"
        if flat:
            return FlatAdam(groups, lr=config.lr, decoupled_weight_decay=decoupled)
        optimizer = torch.optim.AdamW if decoupled else torch.optim.Adam
        return optimizer(groups, lr=config.lr, foreach=True)
    if config.nesterov and config.momentum == 0:
        raise OverfitlabError("--nesterov needs --momentum > 0")
    return torch.optim.SGD(
        groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov, foreach=True
    )


def build_early_stopping(config: Config) -> EarlyStopping | None:
    if not config.early_stopping:
        return None
    return EarlyStopping(
        monitor=config.monitor,
        mode=config.mode,
        patience=config.patience,
        min_delta=config.min_delta,
        min_delta_mode=config.min_delta_mode,
        baseline=config.baseline,
        start_from_epoch=config.start_from_epoch,
        restore_best=config.restore_best,
        check_finite=config.check_finite,
        stopping_threshold=config.stopping_threshold,
        divergence_threshold=config.divergence_threshold,
    )


# The keys selected_data acts on: data selected once is given on without them (the diagnosis).
SELECTION = ("exclude", "relabel", "classes")


def selected_data(config: Config, data: DataSet | None = None) -> DataSet:
    """``data`` when given (the Python API), else the config's data set; the images --exclude
    and --relabel list edited (their positions are the data set's own), then only --classes kept."""
    dataset = data if data is not None else load_dataset(config.dataset, options=data_options(config))
    dataset = apply_edits(dataset, read_edits(config.exclude, config.relabel))
    if config.classes is not None:
        dataset = select_classes(dataset, parse_classes(config.classes))
    return dataset


def train_origins(config: Config, data: DataSet) -> torch.Tensor:
    """Each training image of ``selected_data(config, data)``: its position in ``data.train``.
    The selection is run on the positions standing in for the images (it only indexes them), so
    both take one path."""
    positions = data.with_train(Split(torch.arange(len(data.train)), data.train.labels))
    return selected_data(config, positions).train.images


def load_data(config: Config, data: DataSet | None = None) -> DataSet:
    """The run's data: ``selected_data``, then the training subset and label noise, seeded."""
    return prepare(selected_data(config, data), config.train_size, config.label_noise, config.seed)


def model_meta(
    config: Config, built: BuiltModel, data: DataSet, scaling: Scaling, notes: tuple[str, ...] = ()
) -> dict[str, Any]:
    """What a checkpoint needs to rebuild the model and feed it as in training (format 3)."""
    return {
        "model": config.model,
        "model_args": dict(built.arguments),
        "image_shape": list(data.image_shape),
        "classes": data.classes,
        "class_names": list(data.class_names) if data.class_names is not None else None,
        "scaling": {"mean": scaling.mean, "std": scaling.std},
        "notes": [*built.notes, *notes],
        "input": built.adaptation.to_dict() if built.adaptation else None,
        "start": built.start,
    }


def loss_function(label_smoothing: float) -> LossFn:
    def loss_fn(outputs: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        return F.cross_entropy(outputs, labels, label_smoothing=label_smoothing, reduction=reduction)

    return loss_fn


def live_callbacks(config: Config, live: bool) -> list[Callback]:
    """What ``live=True`` adds: curves in a notebook, a progress bar elsewhere."""
    if not live:
        return []

    if in_notebook():
        # start-up: IPython and matplotlib only in a notebook
        from ..training.live import LiveCurves

        return [LiveCurves()]
    return [EpochProgress(config.epochs)]
