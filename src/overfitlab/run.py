"""One training run from a Config: data → model → trainer → run folder.

``train(config, run_dir)`` is what ``overfitlab train`` calls, and what every
run of a study calls; ``resume(run_dir)`` continues an interrupted run to the
same history an uninterrupted run gives; ``load_model(path)`` rebuilds a saved
model in one call.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import shlex
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import store
from .callbacks import Callback
from .config import Config, from_dict, load_toml, parse_image_size, to_dict, to_toml
from .data import DataOptions, DataSet, Scaling, load_dataset, prepare
from .early_stopping import EarlyStopping
from .environment import resolve_device, run_scope
from .errors import Interrupted, OverfitlabError
from .factories import ARCHITECTURE_OPTIONS, BuiltModel, canonical, keyword_defaults
from .factories import build_model as build_from_reference
from .flat_adam import FlatAdam
from .history import METRICS, History
from .metrics import LABELS, outcome
from .models import PRESETS, count_parameters
from .regularizers import param_groups, penalized_parameters
from .trainer import Diverged, LossFn, Regularization, Trainer

# 2: the model's reference and arguments, input shape, classes and their names, and the
# input scaling (format 1 had only the config and image shape; it still loads).
CHECKPOINT_FORMAT = 2


# --------------------------------------------------------------------------- environment
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


def build_model(config: Config, image_shape: tuple[int, int, int], classes: int) -> BuiltModel:
    """The config's model, by reference (``overfitlab.factories``), for this input and classes."""
    return build_from_reference(
        config.model,
        image_shape,
        classes,
        config.model_args,
        remedies=architecture(config),
        dropout_impl=config.dropout_impl,
    )


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
    from .factories import accepted_keywords, factory_of, kind_of

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
            build_model(config, data.image_shape, data.classes)
        except OverfitlabError as err:
            return str(err)
    return None


def _tomlable(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_tomlable(v) for v in value)
    return isinstance(value, (bool, int, float, str))


def data_options(config: Config) -> DataOptions:
    size = parse_image_size(config.image_size) if config.image_size else None
    return DataOptions(
        config.data_dir, config.download, config.channels, size, config.valid_fraction, config.cache
    )


def build_optimizer(config: Config, model: nn.Module) -> torch.optim.Optimizer:
    """The config's optimizer over the model's decay and no-decay groups; Adam on CPU is
    FlatAdam, torch's numbers for any model (a parameter without a gradient is skipped)."""
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


def load_data(config: Config, data: DataSet | None = None) -> DataSet:
    """The run's data: ``data`` when given (the Python API), else the config's data set;
    then the training subset and label noise, seeded."""
    dataset = data if data is not None else load_dataset(config.dataset, options=data_options(config))
    return prepare(dataset, config.train_size, config.label_noise, config.seed)


# --------------------------------------------------------------------------- persistence callback
# last.pt, best.pt and the history files are written after the first epoch, then at the
# end of an epoch once this many seconds have passed since the previous write, and
# always when training ends for any reason (done, early stop, Ctrl-C, divergence, error).
# A digits epoch of the remedies study takes ~25 ms and writing those files ~12 ms, so writing after every
# epoch made each study run 30-40 % slower. A hard kill loses at most this much training.
SAVE_EVERY_SECONDS = 2.0


class RunRecorder(Callback):
    """Keeps the best epoch's weights; writes history and checkpoints (see SAVE_EVERY_SECONDS)."""

    def __init__(
        self,
        config: Config,
        run_dir: Path | None,
        early_stopping: EarlyStopping | None,
        model_meta: dict[str, Any],
        save_every: float = SAVE_EVERY_SECONDS,
        data_info: DataInfo | None = None,
    ):
        self.data_info = data_info
        self.config = config
        self.run_dir = run_dir
        self.early_stopping = early_stopping
        self.model_meta = model_meta
        self.best_epoch: int | None = None
        self.best_value = math.inf
        self.best_state: dict[str, Any] | None = None
        self.save_every = save_every
        self._pending: dict[str, Any] | None = None  # the last finished epoch's checkpoint, not yet written
        self._best_pending = False
        self._saved_at: float | None = None  # nothing written yet

    def _is_best(self, record: Mapping[str, float]) -> bool:
        if self.early_stopping is not None:
            return self.early_stopping.is_best
        value = record["valid_loss"]  # without early stopping, "best" means lowest valid loss
        if math.isfinite(value) and value < self.best_value:
            self.best_value = value
            return True
        return False

    def _checkpoint(self, trainer: Trainer, with_optimizer: bool) -> dict[str, Any]:
        checkpoint = {
            "format": CHECKPOINT_FORMAT,
            "model": trainer.model.state_dict(),
            "epoch": trainer.epoch,
            "config": {k: v for k, v in to_dict(self.config).items() if v is not None},
            "model_meta": self.model_meta,
        }
        if with_optimizer:
            checkpoint.update(
                {
                    "optimizer": trainer.optimizer.state_dict(),
                    "early_stopping": self.early_stopping.state_dict() if self.early_stopping else None,
                    "best_epoch": self.best_epoch,
                    "best_value": self.best_value,
                    "rng_torch": torch.get_rng_state(),
                    "rng_generator": trainer.generator.get_state(),
                }
            )
        return checkpoint

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: Mapping[str, float]) -> None:
        if self._is_best(dict(metrics)):
            self.best_epoch = epoch
            es = self.early_stopping
            # Early stopping keeps its own copy to restore: the same tensors serve best.pt.
            kept = es.best_weights if es is not None and es.restore_best else None
            self.best_state = kept if kept is not None else copy.deepcopy(trainer.model.state_dict())
            self._best_pending = True
        if self.run_dir:
            # Copied: the next epoch changes the live weights, optimizer state and RNGs.
            self._pending = _copied(self._checkpoint(trainer, with_optimizer=True))
            if self._saved_at is None or time.perf_counter() - self._saved_at >= self.save_every:
                self.flush(trainer)

    def flush(self, trainer: Trainer) -> None:
        """Write what the last finished epoch left: best.pt if it changed, last.pt, history."""
        if not self.run_dir or self._pending is None:
            return
        checkpoint, self._pending = self._pending, None
        history = History(trainer.history.epochs, trainer.history.batches)
        history.truncate(checkpoint["epoch"])
        if self._best_pending and self.best_state is not None:
            best = {
                "format": CHECKPOINT_FORMAT,
                "model": self.best_state,
                "epoch": self.best_epoch,
                "config": checkpoint["config"],
                "model_meta": self.model_meta,
            }
            store.atomic_torch_save(best, self.run_dir / store.BEST)
            self._best_pending = False
        # The checkpoint first: an epoch in history.json is always one last.pt can resume from.
        store.atomic_torch_save({**checkpoint, "history": history.to_dict()}, self.run_dir / store.LAST)
        write_history(self.run_dir, history)
        self._saved_at = time.perf_counter()

    def on_fit_end(self, trainer: Trainer) -> None:
        self.flush(trainer)  # restoring the best weights is early stopping's (its on_fit_end)


def _copied(value: Any) -> Any:
    """Containers copied, tensors cloned, the rest shared: copy.deepcopy's memo and
    reduce protocol cost ~5 ms for one small checkpoint, this ~0.3 ms."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return {k: _copied(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_copied(v) for v in value)
    return value


def write_history(run_dir: Path, history: History) -> None:
    store.atomic_write(run_dir / store.HISTORY_CSV, history.to_csv())
    store.atomic_write(run_dir / store.HISTORY_JSON, history.to_json())


# --------------------------------------------------------------------------- results
@dataclass(frozen=True)
class DataInfo:
    """What a run trained and validated on, named in every output."""

    dataset: str
    train_images: int
    valid_images: int
    input_shape: tuple[int, int, int]  # (C, H, W): the parameter count of a CNN depends on it
    classes: int
    class_names: tuple[str, ...] | None = None

    @classmethod
    def of(cls, data: DataSet) -> DataInfo:
        return cls(
            data.name, len(data.train), len(data.valid), data.image_shape, data.classes, data.class_names
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "train_images": self.train_images,
            "valid_images": self.valid_images,
            "input_shape": list(self.input_shape),
            "classes": self.classes,
            "class_names": list(self.class_names) if self.class_names is not None else None,
        }


def shape_text(shape: Sequence[int]) -> str:
    return "×".join(str(side) for side in shape)


@dataclass
class RunResult:
    config: Config
    history: History
    model: nn.Module
    best_epoch: int | None
    stopped_epoch: int | None
    stop_reason: str
    stop_message: str
    params: int
    run_dir: Path | None
    data: DataInfo | None = None
    model_notes: tuple[str, ...] = ()  # what building the model adapted (factories.BuiltModel.notes)

    @property
    def train_seconds(self) -> float:
        seconds: float = sum(self.history.column("epoch_seconds"))
        return seconds

    @property
    def restored(self) -> bool:
        """Whether the model returned is the best epoch's (early stopping restored it)."""
        return bool(self.config.early_stopping and self.config.restore_best and self.best_epoch is not None)

    def __repr__(self) -> str:
        s = self.summary()

        def fmt(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.4f}"

        data = f"{self.data.dataset}, " if self.data else ""
        return (
            f"RunResult({data}{s['epochs_run']} epochs, final valid acc {fmt(s['final_valid_acc'])}, "
            f"final gap {fmt(s['final_gap_acc'])}, {self.stop_reason}, run_dir={self.run_dir})"
        )

    def _repr_html_(self) -> str:
        from .notebook import run_html

        return run_html(self)

    def summary(self) -> dict[str, Any]:
        """The final summary (``overfitlab train --json``); names as in :mod:`overfitlab.metrics`."""

        def metrics(epoch: int | None) -> dict[str, float | None] | None:
            if epoch is None:
                return None
            record = self.history.record_at(epoch)
            return {k: (record[k] if math.isfinite(record[k]) else None) for k in METRICS}

        last = self.history[-1]["epoch"] if len(self.history) else None
        numbers = outcome(self.history.epochs, self.best_epoch, self.restored)
        return {
            **numbers,
            "best": metrics(self.best_epoch),
            "last": metrics(last),
            "final": metrics(numbers["final_epoch"]),
            "stopped_epoch": self.stopped_epoch,
            "epochs_run": len(self.history),
            "stop_reason": self.stop_reason,
            "stop_message": self.stop_message,
            "train_seconds": round(self.train_seconds, 4),
            "params": self.params,
            "model": self.config.model,
            "model_notes": list(self.model_notes),
            **(self.data.to_dict() if self.data else {}),
            "run_dir": str(self.run_dir) if self.run_dir else None,
        }


def summary_text(summary: Mapping[str, Any]) -> str:
    """The summary for people: the same names as every other output (overfitlab.metrics)."""

    def fmt(value: Any) -> str:
        if value is None:
            return "n/a"
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    best = summary.get("best") or {}
    rows: list[tuple[str, str]] = []
    if summary.get("dataset"):
        rows.append(
            (
                "data set",
                f"{summary['dataset']}: {summary['train_images']:,} training and "
                f"{summary['valid_images']:,} validation images of "
                f"{shape_text(summary['input_shape'])}, {summary['classes']} classes",
            )
        )
    rows += [
        ("epochs run", str(summary["epochs_run"])),
        (LABELS["best_epoch"], fmt(summary["best_epoch"])),
        ("valid acc at best epoch", fmt(best.get("valid_acc"))),
        ("valid loss at best epoch", fmt(best.get("valid_loss"))),
    ]
    rows += [
        (LABELS[key], fmt(summary.get(key)))
        for key in ("final_epoch", "final_valid_acc", "final_gap_acc", "peak_valid_acc", "lowest_valid_loss")
    ]
    reason = summary["stop_reason"]
    message = summary["stop_message"]
    parameters = f"{summary['params']:,}"
    if summary.get("input_shape"):
        parameters += f" (for {shape_text(summary['input_shape'])} inputs)"
    if summary.get("model"):
        notes = "; ".join(summary.get("model_notes") or ())
        rows.append(("model", summary["model"] + (f" ({notes})" if notes else "")))
    rows += [
        ("stop reason", reason + (f": {message}" if message else "")),
        ("train time", f"{summary['train_seconds']:.1f} s"),
        ("parameters", parameters),
        ("run folder", str(summary["run_dir"])),
    ]
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows) + "\n"


def end_run(
    trainer: Trainer,
    recorder: RunRecorder,
    es: EarlyStopping | None,
    config: Config,
    run_dir: Path | None,
    reason: str,
    message: str,
) -> RunResult:
    """The run's result, and in its folder the summary and curves: how every run ends."""
    stopped = es.stopped_epoch if es is not None else None
    best_epoch = es.best_epoch if es is not None and es.best_epoch is not None else recorder.best_epoch
    result = RunResult(
        config,
        trainer.history,
        trainer.model,
        best_epoch,
        stopped,
        reason,
        message,
        count_parameters(trainer.model),
        run_dir,
        recorder.data_info,
        tuple(recorder.model_meta.get("notes") or ()),
    )
    if run_dir:
        summary = result.summary()
        store.write_json(run_dir / store.SUMMARY_JSON, summary)
        store.atomic_write(run_dir / store.SUMMARY_TXT, summary_text(summary))
        if len(trainer.history):
            from .plots import plot_curves  # matplotlib is imported only when a run is saved

            plot_curves(
                trainer.history,
                run_dir / store.CURVES,
                best_epoch=best_epoch,
                stopped_epoch=stopped,
                title=run_dir.name,
            )
    return result


# --------------------------------------------------------------------------- entry points
def _setup(
    config: Config, run_dir: Path | None, callbacks: Sequence[Callback], data: DataSet | None = None
) -> tuple[DataSet, Trainer, EarlyStopping | None, RunRecorder]:
    device = resolve_device(config.device)
    data = load_data(config, data)
    torch.manual_seed(config.seed)  # weights, then dropout masks
    built = build_model(config, data.image_shape, data.classes)
    model = built.module.to(device)
    memory_format = memory_format_for(config, device, built.own)
    model = model.to(memory_format=memory_format)
    if config.compile:
        model.compile()  # in place: state_dict keys and checkpoints stay those of the eager model
    optimizer = build_optimizer(config, model)
    es = build_early_stopping(config)
    scaling = Scaling.fit(data.train.images) if config.normalize else Scaling()
    meta = model_meta(config, built, data, scaling)
    recorder = RunRecorder(config, run_dir, es, meta, data_info=DataInfo.of(data))
    loss_fn = loss_function(config.label_smoothing)
    trainer = Trainer(
        model=model,
        optimizer=optimizer,
        device=device,
        loss_fn=loss_fn,
        regularization=Regularization(
            config.l1, config.l2, penalized_parameters(model, config.penalize_all), config.max_norm
        ),
        batch_size=config.batch_size,
        valid_batch_size=config.valid_batch_size,
        scaling=scaling,
        augment=config.augment,
        memory_format=memory_format,
        callbacks=[c for c in (es, recorder) if c is not None] + list(callbacks),
        max_batches=config.max_batches,
        generator=torch.Generator().manual_seed(config.seed),
        autocast_dtype=torch.bfloat16 if config.bf16 else None,
    )
    return data, trainer, es, recorder


def model_meta(config: Config, built: BuiltModel, data: DataSet, scaling: Scaling) -> dict[str, Any]:
    """What a checkpoint needs to rebuild the model and feed it as in training (format 2)."""
    return {
        "model": config.model,
        "model_args": dict(built.arguments),
        "image_shape": list(data.image_shape),
        "classes": data.classes,
        "class_names": list(data.class_names) if data.class_names is not None else None,
        "scaling": {"mean": scaling.mean, "std": scaling.std},
        "notes": list(built.notes),
    }


def loss_function(label_smoothing: float) -> LossFn:
    def loss_fn(outputs: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        return F.cross_entropy(outputs, labels, label_smoothing=label_smoothing, reduction=reduction)

    return loss_fn


@dataclass
class StartedRun:
    """A run set up as ``train`` sets it up, before its first epoch (``start_run``)."""

    config: Config
    data: DataSet
    trainer: Trainer
    early_stopping: EarlyStopping | None
    recorder: RunRecorder
    run_dir: Path | None


def _fit(run: StartedRun) -> RunResult:
    config, trainer, es, recorder, run_dir = (
        run.config,
        run.trainer,
        run.early_stopping,
        run.recorder,
        run.run_dir,
    )
    try:
        try:
            trainer.fit(run.data, config.epochs)
        finally:
            recorder.flush(trainer)  # whatever ended training, the folder holds its last epoch
    except KeyboardInterrupt:
        end_run(trainer, recorder, es, config, run_dir, "interrupted", f"after epoch {trainer.epoch}")
        raise Interrupted(interrupted_message(trainer.epoch, run_dir)) from None
    except Diverged as err:
        end_run(trainer, recorder, es, config, run_dir, "diverged", str(err))
        raise
    return end_run(trainer, recorder, es, config, run_dir, *finished(es, config))


def interrupted_message(epoch: int, run_dir: Path | None) -> str:
    """What Ctrl-C leaves, and the command that continues it, quoted for a shell."""
    if epoch == 0:
        return "before the first epoch ended: nothing was saved, run it again"
    where = f": resume with `overfitlab train --resume {shlex.quote(str(run_dir))}`" if run_dir else ""
    return f"after epoch {epoch}{where}"


def finished(es: EarlyStopping | None, config: Config) -> tuple[str, str]:
    """Why a run that trained to its end ended: (reason, message) for its summary."""
    if es is not None and es.stopped_epoch is not None:
        return es.stop_reason.value, es.reason or ""
    return "completed", f"{config.epochs} epoch{'s' if config.epochs != 1 else ''}"


def train(
    config: Config,
    run_dir: str | os.PathLike[str] | None = None,
    callbacks: Sequence[Callback] = (),
    live: bool = False,
    data: DataSet | None = None,
) -> RunResult:
    """Train one run. With ``run_dir`` (an empty or new folder) everything is saved there.

    ``data`` trains on a DataSet built in Python (``DataSet.from_arrays``, ``from_folder``,
    ``from_torch``) instead of the config's ``dataset``; the train-size subset and label noise
    still apply. With ``live``, the learning curves are redrawn in place in a notebook while it
    trains (``overfitlab.notebook.LiveCurves``); in a terminal, a progress bar on stderr instead.
    """
    with run_scope(config.threads, config.device):  # the caller's threads and RNG back after
        return _fit(start_run(config, run_dir, [*callbacks, *live_callbacks(config, live)], data))


def live_callbacks(config: Config, live: bool) -> list[Callback]:
    """What ``live=True`` adds: curves in a notebook, a progress bar elsewhere."""
    if not live:
        return []
    from .progress import EpochProgress, in_notebook

    if in_notebook():
        from .notebook import LiveCurves

        return [LiveCurves()]
    return [EpochProgress(config.epochs)]


def start_run(
    config: Config,
    run_dir: str | os.PathLike[str] | None = None,
    callbacks: Sequence[Callback] = (),
    data: DataSet | None = None,
) -> StartedRun:
    """What ``train`` does before the first epoch, the folder made and its config.toml written.

    It seeds torch's global generator, as training then draws from it: a caller that goes on
    to train outside ``train`` wraps both in ``environment.run_scope`` (as stacking does)."""
    config = resolved(config if data is None else config.replace(dataset=_python_name(data)))
    path = Path(run_dir) if run_dir is not None else None
    # Data and model first: a bad --train-size or data folder fails before any file is written.
    data, trainer, es, recorder = _setup(config, path, callbacks, data)
    if path is not None:
        store.ensure_folder(path, "run folder", "run_dir")
        store.atomic_write(path / store.CONFIG, to_toml(config))
    return StartedRun(config, data, trainer, es, recorder, path)


def _python_name(data: DataSet) -> str:
    """The config's dataset for a DataSet given in Python: its own name when that names a data
    set overfitlab can load again (a folder, an .npz), else ``python:NAME``."""
    from .data import check_dataset_name

    try:
        check_dataset_name(data.name)
    except OverfitlabError:
        return f"python:{data.name}"
    return data.name


def resume(
    run_dir: str | os.PathLike[str],
    epochs: int | None = None,
    callbacks: Sequence[Callback] = (),
    data: DataSet | None = None,
) -> RunResult:
    """Continue a run from its ``last.pt``; ``epochs`` raises the epoch limit. A run trained on
    a DataSet given in Python needs the same ``data`` again."""
    path = Path(run_dir)
    if path.is_file():
        raise OverfitlabError(
            f"{path} is a file, not a run folder: pass the folder `overfitlab train` printed"
        )
    if not path.is_dir():
        raise OverfitlabError(f"run folder {path} not found: pass the folder printed by `overfitlab train`")
    if not (path / store.LAST).is_file() and (path / store.CONFIG).is_file():
        # Interrupted before its first epoch ended: nothing to continue, so it starts over.
        config = load_toml(path / store.CONFIG)
        return train(config if epochs is None else config.replace(epochs=epochs), path, callbacks, data=data)
    checkpoint = store.load_checkpoint(path / store.LAST)
    config = from_dict(checkpoint["config"])
    if epochs is not None:
        config = config.replace(epochs=epochs)
        store.atomic_write(path / store.CONFIG, to_toml(config))
    with run_scope(config.threads, config.device):  # the caller's threads and RNG back after
        return _continue(config, checkpoint, path, callbacks, data)


def _continue(
    config: Config,
    checkpoint: Mapping[str, Any],
    path: Path,
    callbacks: Sequence[Callback],
    data: DataSet | None,
) -> RunResult:
    """``resume`` from a checkpoint: the run set up as it was after its last saved epoch."""
    data, trainer, es, recorder = _setup(config, path, callbacks, data)
    trainer.model.load_state_dict(checkpoint["model"])
    trainer.optimizer.load_state_dict(checkpoint["optimizer"])
    trainer.history = History.from_dict(checkpoint["history"])
    trainer.epoch = checkpoint["epoch"]
    trainer.history.truncate(trainer.epoch)
    if es is not None and checkpoint.get("early_stopping"):
        es.load_state_dict(checkpoint["early_stopping"])
    recorder.best_epoch = checkpoint.get("best_epoch")
    recorder.best_value = checkpoint.get("best_value", math.inf)
    if (path / store.BEST).is_file():
        recorder.best_state = store.load_checkpoint(path / store.BEST)["model"]
        if es is not None and es.restore_best:
            es.best_weights = recorder.best_state
    torch.set_rng_state(checkpoint["rng_torch"])
    trainer.generator.set_state(checkpoint["rng_generator"])
    if es is not None and es.stopped_epoch is not None:
        # Already stopped early: nothing to train, report what was found.
        es.on_fit_end(trainer)
        recorder.on_fit_end(trainer)
        return end_run(trainer, recorder, es, config, path, *finished(es, config))
    return _fit(StartedRun(config, data, trainer, es, recorder, path))


class Standardized(nn.Module):
    """A model trained with ``--normalize``: takes images in [0, 1] (ToTensor's scale) and
    standardizes them with the training set's mean and std before the model sees them."""

    def __init__(self, model: nn.Module, mean: float, std: float):
        super().__init__()
        self.model = model
        self.mean = mean
        self.std = std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model((x - self.mean) / self.std)
        return out


@dataclass(frozen=True)
class SavedModel:
    """What a checkpoint says about its model (format 1 files are read into the same fields)."""

    config: Config
    model: str
    model_args: dict[str, Any]
    image_shape: tuple[int, int, int]
    classes: int
    class_names: tuple[str, ...] | None
    scaling: Scaling
    epoch: int | None

    @classmethod
    def of(cls, checkpoint: Mapping[str, Any]) -> SavedModel:
        config = from_dict(checkpoint["config"])
        meta = checkpoint["model_meta"]
        names = meta.get("class_names")
        scaling = meta.get("scaling") or {}
        return cls(
            config,
            meta.get("model", config.model),
            dict(meta.get("model_args", config.model_args)),
            (int(meta["image_shape"][0]), int(meta["image_shape"][1]), int(meta["image_shape"][2])),
            int(meta["classes"]),
            tuple(names) if names is not None else None,
            # A format-1 checkpoint of a --normalize run did not save them: they are recomputed.
            Scaling(scaling.get("mean", 0.0), scaling.get("std", 1.0)),
            checkpoint.get("epoch"),
        )


def checkpoint_path(path: str | os.PathLike[str], which: str = "best") -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / (store.BEST if which == "best" else store.LAST)
    return path


def read_saved(path: Path) -> tuple[dict[str, Any], SavedModel]:
    checkpoint = store.load_checkpoint(path)
    saved = SavedModel.of(checkpoint)
    if saved.config.normalize and "scaling" not in checkpoint["model_meta"]:
        # Format 1 had no mean and std: the training set's, as the run computed them.
        data = load_data(saved.config)
        saved = dataclasses.replace(saved, scaling=Scaling.fit(data.train.images))
    return checkpoint, saved


def rebuild(file: Path, model: nn.Module | None = None) -> tuple[nn.Module, SavedModel]:
    """The checkpoint's model with its weights (train mode, no input scaling) and what it says."""
    state, saved = read_saved(file)
    if model is None:  # as the run built it: the checkpoint's reference and arguments
        recipe = dataclasses.replace(saved.config, model=saved.model, model_args=saved.model_args)
        model = build_model(recipe, saved.image_shape, saved.classes).module
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        first = " ".join(str(err).split())[:300]
        raise OverfitlabError(
            f"the weights in {file} do not fit the model given ({first}): build the model of the run"
        ) from None
    return model, saved


def load_model(
    path: str | os.PathLike[str], model: nn.Module | None = None, checkpoint: str = "best"
) -> nn.Module:
    """The model saved in ``best.pt`` or ``last.pt`` (or a run folder: its ``checkpoint``), in
    eval mode, taking images as floats in [0, 1] (ToTensor's scale) whatever the run's
    ``--normalize``: a normalized run's model comes wrapped in ``Standardized``.

    The model is rebuilt from its reference (a user factory is imported), or, with ``model``,
    the weights are loaded into the module the caller built."""
    model, saved = rebuild(checkpoint_path(path, checkpoint), model)
    if saved.scaling != Scaling():
        model = Standardized(model, saved.scaling.mean, saved.scaling.std)
    return model.eval()
