"""One run's recipe: a flat, frozen, typed config with TOML round-trip.

Every option is one field here, and only here: the CLI flags, the TOML file, the
study overrides and the docs are all generated from these fields, so a new
option is added in one place. Fields are grouped in sections only for the TOML
file a person reads; in Python the config is flat (``config.dropout``).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from .data.split import DataOptions

from .catalog import BUILTIN
from .errors import OverfitlabError, did_you_mean
from .history import EPOCH_COLUMNS
from .textvalues import parse_classes, parse_image_size
from .tomltext import read_toml, toml_key, toml_value

SECTIONS = ("data", "model", "finetune", "optim", "regularization", "early_stopping", "run")

DATASETS = tuple(BUILTIN)
READS_DATA_DIR = tuple(name for name, b in BUILTIN.items() if b.torchvision)  # digits: scikit-learn's
HEADS = ("fc", "gap")
OPTIMIZERS = ("adam", "adamw", "sgd")
DEVICES = ("auto", "cpu", "cuda", "mps")
MODES = ("min", "max", "auto")
DELTA_MODES = ("abs", "rel")
DROPOUT_IMPLS = ("fast", "torch")
MEMORY_FORMATS = ("auto", "contiguous", "channels_last")


_T = TypeVar("_T")


def _opt(
    default: _T, section: str, help: str, choices: tuple[str, ...] | None = None, bare: str | None = None
) -> _T:
    """A field; ``bare``: the value its flag takes when given without one (``--pretrained``)."""
    return field(
        default=default, metadata={"section": section, "help": help, "choices": choices, "bare": bare}
    )


def _table(section: str, help: str) -> Any:
    """A TOML table field (``[model.args]``): a dict, left out of the config's hash."""
    return field(
        default_factory=dict, hash=False, metadata={"section": section, "help": help, "choices": None}
    )


@dataclass(frozen=True)
class Config:
    # --- data: what the model sees -------------------------------------------------
    dataset: str = _opt(
        "digits",
        "data",
        f"data set: {', '.join(DATASETS)}, folder:PATH (class subfolders, ImageFolder layout) "
        "or arrays:FILE.npz (Keras names x_train, y_train, x_test, y_test)",
    )
    data_dir: str | None = _opt(
        None,
        "data",
        "folder of the torchvision data sets (default: $OVERFITLAB_DATA_DIR or ~/.cache/overfitlab/data)",
    )
    download: bool = _opt(True, "data", "download a missing data set when the network allows")
    channels: int | None = _opt(
        None, "data", "folder images: 1 (grey) or 3 (RGB) channels (default: from the images)"
    )
    image_size: str | None = _opt(
        None, "data", "folder images resized to H or H,W pixels (default: their size, when all agree)"
    )
    valid_fraction: float = _opt(
        0.2,
        "data",
        "folder without a valid/ split, or arrays without x_test: stratified share held out for validation",
    )
    cache: bool = _opt(
        True, "data", "keep a folder's decoded images in the data cache, memory-mapped by every run"
    )
    train_size: int | None = _opt(
        None, "data", "stratified subset of N training images (less data makes over-fitting visible)"
    )
    label_noise: float = _opt(0.0, "data", "fraction of training labels replaced by a wrong class")
    classes: str | None = _opt(
        None, "data", "keep only these classes, numbered anew from 0: 0-4 or 5,7,9 (a transfer's two halves)"
    )
    exclude: str | None = _opt(None, "data", "leave out the images listed: `labels`' CSV or train indices")
    relabel: str | None = _opt(None, "data", "give the images listed their `suggested` label (`labels`' CSV)")
    augment: bool = _opt(
        False,
        "data",
        "random shifts (±1/14 of the side: 2 px on 28×28) and rotations (±10°) of training batches",
    )
    normalize: bool = _opt(
        False,
        "data",
        "standardize pixels with the training set's mean and std "
        "(off: pixels in [0, 1] as the tutorial's ToTensor)",
    )
    batch_size: int = _opt(32, "data", "training batch size (the tutorial's 32)")
    # Validation runs under inference_mode: its batch size changes speed, never a number.
    # 250, not 1000: activations stay in cache and under malloc's mmap threshold (2.5x faster on CPU).
    valid_batch_size: int = _opt(250, "data", "validation batch size")

    # --- model: any factory; the CNN options below go to factories that take them ---------
    model: str = _opt(
        "seed-cnn",
        "model",
        "model: a preset (`overfitlab summary --list`), torchvision:NAME, timm:NAME, "
        "package.module:function or path/to/file.py:function",
    )
    model_args: dict[str, Any] = _table(
        "model", "keyword arguments of the model's factory (TOML table [model.args])"
    )
    hidden: int | None = _opt(None, "model", "channels of the first conv block (doubling per block)")
    blocks: int | None = _opt(None, "model", "number of Conv-[BN]-ReLU-[Dropout]-MaxPool blocks")
    batchnorm: bool | None = _opt(None, "model", "batch normalization after each conv")
    dropout: float | None = _opt(None, "model", "dropout probability after each block's activation")
    head: str | None = _opt(None, "model", "classifier head: flatten+FC or global average pooling", HEADS)
    fc_width: int | None = _opt(None, "model", "hidden units of the head's first linear layer")

    # --- finetune: start from weights that saw more data, and how far to let them move ---
    pretrained: str | None = _opt(
        None,
        "finetune",
        "start from published weights: default, a weights name (torchvision IMAGENET1K_V1, a timm tag) or "
        "a timm weights file; read from the local cache, downloaded only with --download and a network",
        bare="default",
    )
    init: str | None = _opt(
        None,
        "finetune",
        "start from your own weights: a run folder, best.pt, a .pt/.pth/.safetensors file",
    )
    input_size: str | None = _opt(
        None,
        "finetune",
        "published weights: images resized to H or H,W (default: the weights'; native)",
    )
    freeze: bool = _opt(
        False, "finetune", "train the head only; the body keeps its weights (batch norm adapts)"
    )
    freeze_epochs: int = _opt(
        0, "finetune", "train the head only for N epochs, then all (fastai's fine_tune)"
    )
    unfreeze_every: int = _opt(
        0, "finetune", "gradual unfreezing: then one more body block every N epochs, from the head down"
    )
    body_lr_ratio: float = _opt(
        1.0, "finetune", "discriminative rates: the first body block learns at lr×R, later ones nearer lr"
    )
    reinit_head: bool = _opt(False, "finetune", "give the head fresh random weights instead of loaded ones")
    l2_sp: float = _opt(
        0.0, "finetune", "L2-SP: penalty λΣ(w − w₀)² pulling the body toward its start weights"
    )

    # --- optim -----------------------------------------------------------------------
    optimizer: str = _opt("adam", "optim", "optimizer", OPTIMIZERS)
    lr: float = _opt(0.01, "optim", "learning rate (the tutorial's Adam 0.01)")
    momentum: float = _opt(0.9, "optim", "SGD momentum")
    nesterov: bool = _opt(False, "optim", "SGD Nesterov momentum")
    epochs: int = _opt(10, "optim", "maximum number of epochs")
    label_smoothing: float = _opt(0.0, "optim", "cross-entropy label smoothing ε")

    # --- regularization: each remedy, all combinable ---------------------------------
    l1: float = _opt(0.0, "regularization", "L1 penalty λΣ|w| added to the loss")
    l2: float = _opt(0.0, "regularization", "L2 penalty λΣw² added to the loss")
    weight_decay: float = _opt(
        0.0, "regularization", "optimizer weight decay (coupled for adam/sgd, decoupled for adamw)"
    )
    penalize_all: bool = _opt(
        False,
        "regularization",
        "apply L1/L2/weight decay to biases and norm parameters too (default: conv and linear weights only)",
    )
    max_norm: float | None = _opt(
        None,
        "regularization",
        "max-norm constraint: each unit's incoming weight vector is rescaled to norm ≤ C after every step",
    )

    # --- early stopping (Keras/Lightning semantics) ------------------------------------
    early_stopping: bool = _opt(False, "early_stopping", "stop when the monitored metric stops improving")
    monitor: str = _opt("valid_loss", "early_stopping", "metric to monitor (any history column)")
    mode: str = _opt("auto", "early_stopping", "min, max, or auto (max for accuracies)", MODES)
    patience: int = _opt(5, "early_stopping", "epochs without improvement before stopping")
    min_delta: float = _opt(0.0, "early_stopping", "smallest change that counts as improvement")
    min_delta_mode: str = _opt(
        "abs", "early_stopping", "min_delta absolute or relative to the best", DELTA_MODES
    )
    baseline: float | None = _opt(None, "early_stopping", "value the metric must beat to reset patience")
    start_from_epoch: int = _opt(0, "early_stopping", "epochs to train before monitoring starts")
    restore_best: bool = _opt(True, "early_stopping", "return and save the best epoch's model")
    check_finite: bool = _opt(True, "early_stopping", "stop at once when the metric is NaN or Inf")
    stopping_threshold: float | None = _opt(None, "early_stopping", "stop once the metric is this good")
    divergence_threshold: float | None = _opt(None, "early_stopping", "stop once the metric is this bad")

    # --- run: reproducibility and engine -----------------------------------------------
    seed: int = _opt(0, "run", "seed of weights, batch order, dropout, augmentation, subset and noise")
    device: str = _opt("auto", "run", "device", DEVICES)
    threads: int | None = _opt(None, "run", "torch CPU threads (default: the CPU cores available)")
    dropout_impl: str = _opt(
        "fast",
        "run",
        "dropout masks: fast (same Bernoulli law, cheaper draws) or torch (nn.Dropout)",
        DROPOUT_IMPLS,
    )
    memory_format: str = _opt(
        "auto", "run", "image memory layout (auto: the faster one for the model and device)", MEMORY_FORMATS
    )
    max_batches: int | None = _opt(None, "run", "stop each epoch after N batches (smoke tests)")
    mlflow_uri: str | None = _opt(
        None,
        "run",
        "MLflow tracking URI to log runs to with --mlflow (default: SQLite in the runs folder; "
        "nothing is sent anywhere unless a URI is given)",
    )
    # Speed-ups that change the numbers: off unless asked for, meant for CUDA.
    bf16: bool = _opt(
        False, "run", "bfloat16 autocast of forward and loss (CUDA tensor cores; changes the numbers)"
    )
    compile: bool = _opt(
        False,
        "run",
        "torch.compile the model (changes the numbers slightly; slower than eager on small CPUs)",
    )

    def replace(self, **changes: Any) -> Config:
        return validate(dataclasses.replace(self, **changes))


FIELDS = {f.name: f for f in fields(Config)}


# --------------------------------------------------------------------------- checks
def _positive(name: str, value: float | None, allow_zero: bool = False) -> None:
    if value is None:
        return
    ok = value >= 0 if allow_zero else value > 0
    if not ok or (isinstance(value, float) and not math.isfinite(value)):
        bound = "≥ 0" if allow_zero else "> 0"
        raise OverfitlabError(f"{name} must be {bound}, got {value}: pass a value {bound}")


def _fraction(name: str, value: float | None, closed: bool) -> None:
    if value is None:
        return
    ok = 0.0 <= value <= 1.0 if closed else 0.0 <= value < 1.0
    if not ok:
        upper = "1]" if closed else "1)"
        raise OverfitlabError(f"{name} must be in [0, {upper}, got {value}")


def validate(config: Config) -> Config:
    """Check every value; raise OverfitlabError naming the field and the fix."""
    # start-up: torch only once a Config is validated
    from .data.registry import check_dataset_name
    from .models.factory import check_reference

    check_dataset_name(config.dataset)
    check_reference(config.model)
    for f in fields(Config):
        value = getattr(config, f.name)
        choices = f.metadata["choices"]
        if choices and value is not None and value not in choices:
            raise OverfitlabError(f"unknown {f.name} {value!r}: choose one of {', '.join(choices)}")
    for name in (
        "lr",
        "batch_size",
        "valid_batch_size",
        "epochs",
        "hidden",
        "blocks",
        "fc_width",
        "train_size",
        "max_norm",
        "threads",
        "max_batches",
        "body_lr_ratio",
    ):
        _positive(name, getattr(config, name))
    _finetune_checks(config)
    if config.channels is not None and config.channels not in (1, 3):
        raise OverfitlabError(f"channels must be 1 or 3, got {config.channels}")
    if config.image_size is not None:
        parse_image_size(config.image_size)
    if not 0.0 < config.valid_fraction < 1.0:
        raise OverfitlabError(f"valid_fraction must be in (0, 1), got {config.valid_fraction}")
    for key in config.model_args:
        if not key.isidentifier():
            raise OverfitlabError(f"bad model argument name {key!r}: use a Python identifier")
    for name in ("momentum", "l1", "l2", "weight_decay", "min_delta"):
        _positive(name, getattr(config, name), allow_zero=True)
    for name in ("patience", "start_from_epoch", "freeze_epochs", "unfreeze_every", "l2_sp"):
        _positive(name, getattr(config, name), allow_zero=True)
    _fraction("dropout", config.dropout, closed=False)
    _fraction("label_noise", config.label_noise, closed=True)
    _fraction("label_smoothing", config.label_smoothing, closed=False)
    if config.data_dir is not None and config.dataset not in READS_DATA_DIR:
        raise OverfitlabError(
            f"data_dir is read by the data sets {', '.join(READS_DATA_DIR)}, but the data set is "
            f"{config.dataset!r} (built in, it reads no folder): pass --dataset too, or drop --data-dir"
        )
    if config.monitor not in EPOCH_COLUMNS:
        raise OverfitlabError(
            f"unknown monitor {config.monitor!r}: {did_you_mean(config.monitor, EPOCH_COLUMNS)}"
            f"a run records {', '.join(EPOCH_COLUMNS)}"
        )
    return config


def _finetune_checks(config: Config) -> None:
    if config.classes is not None:
        parse_classes(config.classes)
    if config.input_size not in (None, "native"):
        parse_image_size(config.input_size)


def data_options(config: Config) -> DataOptions:
    """How the config's data set is read: its data fields that are not remedies."""
    from .data.split import DataOptions  # start-up: the data package imports torch

    size = parse_image_size(config.image_size) if config.image_size else None
    return DataOptions(
        config.data_dir, config.download, config.channels, size, config.valid_fraction, config.cache
    )


# --------------------------------------------------------------------------- coercion
def _coerce(name: str, value: Any) -> Any:
    """Check a TOML/override value against the field's type; ints are accepted as floats."""
    annotation = str(FIELDS[name].type)
    optional = "None" in annotation
    if value is None and optional:
        return None
    base = annotation.split("|")[0].split("[")[0].strip()
    kind = {"str": str, "int": int, "float": float, "bool": bool, "dict": dict}[base]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise OverfitlabError(f"{name} must be {base}{' or omitted' if optional else ''}, got {value!r}")
    return value


# What people coming from Keras, Lightning or the tutorial write for a field.
ALIASES = {
    "learning_rate": "lr",
    "epoch": "epochs",
    "max_epochs": "epochs",
    "batch": "batch_size",
    "wd": "weight_decay",
    "optim": "optimizer",
    "bn": "batchnorm",
    "batch_norm": "batchnorm",
    "data": "dataset",
    "es": "early_stopping",
    "restore_best_weights": "restore_best",
    "smoothing": "label_smoothing",
}


def section_keys(section: str) -> list[str]:
    """The keys of a section as a file writes them (a table field as its ``[section.name]``)."""
    return [
        f"[{section}.{f.name.removeprefix(section + '_')}]" if _type_name(f.name) == "dict" else f.name
        for f in fields(Config)
        if f.metadata["section"] == section
    ]


def unknown_key_error(key: str, where: str, section: str | None = None) -> OverfitlabError:
    """One line: the close matches, else the keys of the section it was found in (never all 50)."""
    name = key.replace("-", "_")
    if section is not None and name in FIELDS:
        return OverfitlabError(
            f"{key!r} in [{section}] of {where} belongs in "
            f"[{FIELDS[name].metadata['section']}]: move it there"
        )
    hint = f"did you mean {ALIASES[name]}? " if name in ALIASES else did_you_mean(name, FIELDS)
    if section is not None:
        where = f"[{section}] of {where}"
        rest = hint or f"the keys of [{section}] are {', '.join(section_keys(section))}"
    else:
        rest = hint or "see `overfitlab train --help` for every option"
    return OverfitlabError(f"unknown key {key!r} in {where}: {rest.rstrip()}")


def unknown_section_error(section: str, where: str) -> OverfitlabError:
    hint = did_you_mean(section, SECTIONS) or ""
    return OverfitlabError(
        f"unknown section [{section}] in {where}: {hint}the sections are {', '.join(SECTIONS)}"
    )


def apply_overrides(config: Config, overrides: Mapping[str, Any], where: str = "overrides") -> Config:
    """Return config with flat ``{field: value}`` overrides, type-checked and validated."""
    changes = {}
    for key, value in overrides.items():
        name = key.replace("-", "_").split(".")[-1]
        if name not in FIELDS:
            raise unknown_key_error(key, where)
        changes[name] = _coerce(name, value)
    return validate(dataclasses.replace(config, **changes))


def flatten_toml(document: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Sections (as written by to_toml) or flat keys → flat {field: value}."""
    flat: dict[str, Any] = {}
    for key, value in document.items():
        if key in SECTIONS and isinstance(value, dict):
            for inner, inner_value in value.items():
                if key == "model" and inner == "args" and isinstance(inner_value, dict):
                    flat["model_args"] = inner_value  # the table [model.args]
                    continue
                name = inner.replace("-", "_")
                if name not in FIELDS or FIELDS[name].metadata["section"] != key:
                    raise unknown_key_error(inner, where, section=key)
                flat[name] = inner_value
        elif isinstance(value, dict) and _type_name(key.replace("-", "_")) != "dict":
            raise unknown_section_error(key, where)
        else:
            flat[key] = value
    return flat


def load_toml(path: str | os.PathLike[str], base: Config | None = None) -> Config:
    """Read a config file; unknown keys are errors that name the valid ones."""
    document = read_toml(path)
    return apply_overrides(base or Config(), flatten_toml(document, str(path)), str(path))


# --------------------------------------------------------------------------- output
def to_toml(config: Config) -> str:
    """The config as sectioned TOML; None (use the default) is omitted."""
    lines = []
    for section in SECTIONS:
        lines.append(f"[{section}]")
        tables = []
        for f in fields(Config):
            value = getattr(config, f.name)
            if f.metadata["section"] != section or value is None:
                continue
            if isinstance(value, dict):
                tables.append((f.name, value))
            else:
                lines.append(f"{f.name} = {toml_value(value)}")
        lines.append("")
        for name, table in tables:  # after the section's keys, as TOML requires
            if table:
                lines.append(f"[{section}.{name.removeprefix(section + '_')}]")
                lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in table.items()]
                lines.append("")
    return "\n".join(lines)


def _type_name(name: str) -> str | None:
    if name not in FIELDS:
        return None
    return str(FIELDS[name].type).split("|")[0].split("[")[0].strip()


def to_dict(config: Config) -> dict[str, Any]:
    return dataclasses.asdict(config)


def from_dict(values: Mapping[str, Any]) -> Config:
    return apply_overrides(Config(), {k: v for k, v in values.items() if v is not None})
