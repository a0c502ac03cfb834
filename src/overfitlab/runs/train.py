"""One training run from a Config: ``train``, ``resume`` and the steps they share."""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import store
from ..config import Config, from_dict, load_toml, to_toml
from ..data.batches import Scaling
from ..data.dataset import DataSet
from ..data.registry import check_dataset_name
from ..environment import resolve_device, run_scope
from ..errors import Interrupted, OverfitlabError
from ..models.registry import count_parameters
from ..training.callbacks import Callback
from ..training.early_stopping import EarlyStopping
from ..training.regularizers import penalized_parameters
from ..training.trainer import Diverged, Regularization, Trainer
from .build import (
    anchors,
    build_early_stopping,
    build_model,
    build_optimizer,
    live_callbacks,
    load_data,
    loss_function,
    memory_format_for,
    model_meta,
    model_parts,
    resolved,
    tuning_notes,
    unfreezing,
)
from .checkpoint import load_checkpoint, restore_training
from .recorder import RunRecorder
from .result import DataInfo, RunResult, summary_text


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
            # start-up: matplotlib only when a run is saved
            from ..viz.plots import plot_curves

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
    parts = model_parts(config, model, data.classes)
    optimizer = build_optimizer(config, model, parts)
    es = build_early_stopping(config)
    scaling = Scaling.fit(data.train.images) if config.normalize else Scaling()
    schedule = unfreezing(config, parts)
    meta = model_meta(config, built, data, scaling, tuning_notes(optimizer, schedule) if parts else ())
    recorder = RunRecorder(config, run_dir, es, meta, data_info=DataInfo.of(data))
    loss_fn = loss_function(config.label_smoothing)
    penalized = penalized_parameters(model, config.penalize_all)
    if config.l2_sp and parts is not None:  # L2-SP (Li et al. 2018): the body toward w₀, plain L2 on the head
        penalized = penalized_parameters(parts.head.module, config.penalize_all)
    trainer = Trainer(
        model=model,
        optimizer=optimizer,
        device=device,
        loss_fn=loss_fn,
        regularization=Regularization(
            config.l1, config.l2, penalized, config.max_norm, config.l2_sp, anchors(config, parts)
        ),
        batch_size=config.batch_size,
        valid_batch_size=config.valid_batch_size,
        scaling=scaling,
        augment=config.augment,
        memory_format=memory_format,
        callbacks=[c for c in (schedule, es, recorder) if c is not None] + list(callbacks),
        max_batches=config.max_batches,
        generator=torch.Generator().manual_seed(config.seed),
        autocast_dtype=torch.bfloat16 if config.bf16 else None,
    )
    return data, trainer, es, recorder


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
    trains (``training.LiveCurves``); in a terminal, a progress bar on stderr instead.
    """
    with run_scope(config.threads, config.device):  # the caller's threads and RNG back after
        return _fit(start_run(config, run_dir, [*callbacks, *live_callbacks(config, live)], data))


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
    checkpoint = load_checkpoint(path / store.LAST)
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
    recorder.best_epoch, recorder.best_value = restore_training(checkpoint, trainer, es)
    if (path / store.BEST).is_file():
        recorder.best_state = load_checkpoint(path / store.BEST)["model"]
        if es is not None and es.restore_best:
            es.best_weights = recorder.best_state
    if es is not None and es.stopped_epoch is not None:
        # Already stopped early: nothing to train, report what was found.
        es.on_fit_end(trainer)
        recorder.on_fit_end(trainer)
        return end_run(trainer, recorder, es, config, path, *finished(es, config))
    return _fit(StartedRun(config, data, trainer, es, recorder, path))
