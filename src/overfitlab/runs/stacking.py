"""Several seeds of one recipe trained at once: one model's layers over stacked weights.

``train_seeds(config, seeds, run_dirs)`` sets each seed's run up exactly as
``train`` would (``torch.manual_seed(seed)`` before the weights, its training
subset, batches from ``Generator().manual_seed(seed)``, its run folder), stacks
the weights with ``torch.func.stack_module_state`` and runs every step for all
of them through ``torch.func.vmap``: each kernel launch does the work of S runs.
After every epoch each member's weights and optimizer state are copied back
into its own run, whose recorder keeps the best epoch and writes the run folder
as ``train`` does: a member's folder is an ordinary run folder
(``train --resume`` continues it alone).

Small CNNs spend most of a step launching kernels on a GPU, which is what
stacking is for; it has not been measured on one yet (``python -m benchmarks
--only stacking --device cuda`` does). On a 2-core CPU it does not pay: a bare
training step of 3 stacked seeds of the digits recipe was 8 % faster than three
separate steps, but whole runs were slower (the ``remedies`` study, 3 seeds,
serial, 2 threads: 54.3 s stacked, 44.5 s one by one), the stacking of batches,
the vmapped validation and copying each member back costing more than the
launches saved.

Each member's gradient is its own loss's: the members' losses (and penalties)
are summed, and no parameter is shared. The numbers equal separate runs up to
rounding, not bit for bit: stacked kernels (a grouped convolution) add in
another order, and dropout masks come from vmap's random stream, not the run's.
So this is a recipe choice to record, never a silent backend.

Each member has its own early stopping, which ends its run at the epoch its
run would end (the stack trains on until every member has stopped, the
stopped ones' further steps discarded), and a member whose loss stops being
finite ends as "diverged" at that epoch, as its run would. Not supported here
(refused with one line): augmentation, max-norm, normalization, ``--compile``,
``--bf16``, and by construction any option added to Config later (``IMPLEMENTED``).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypedDict

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from ..config import Config
from ..data import batches as datalib
from ..data.batches import Scaling
from ..data.dataset import DataSet
from ..data.split import Split
from ..environment import run_scope
from ..errors import Interrupted, OverfitlabError
from ..training.regularizers import param_groups, penalized_parameters
from ..training.trainer import Regularization, Trainer, diverged_message, epoch_record
from .build import loss_function, optimizer_for, resolved
from .result import RunResult
from .train import StartedRun, end_run, finished, interrupted_message, start_run

# Every Config field the stacked step honours: set up per member by ``start_run`` exactly as
# ``train`` sets it up (data, subset, label noise, model, optimizer and weight decay, early
# stopping, the run folder, device and threads) or applied in ``_Stack`` (the loss with label
# smoothing, the L1 and L2 penalties). Any other field is refused whenever it differs from its
# default: a remedy added to Config is refused here until it is implemented here, never
# trained stacked without it.
IMPLEMENTED = frozenset(
    {
        *("dataset", "data_dir", "download", "channels", "image_size", "valid_fraction", "cache"),
        *("train_size", "label_noise", "exclude", "relabel", "batch_size", "valid_batch_size"),
        *("model", "model_args", "hidden", "blocks", "batchnorm", "dropout", "head", "fc_width"),
        *("optimizer", "lr", "momentum", "nesterov", "epochs", "label_smoothing"),
        *("l1", "l2", "weight_decay", "penalize_all"),
        *("early_stopping", "monitor", "mode", "patience", "min_delta", "min_delta_mode", "baseline"),
        *("start_from_epoch", "restore_best", "check_finite", "stopping_threshold"),
        *("divergence_threshold", "seed", "device", "threads", "dropout_impl", "memory_format"),
        *("max_batches", "mlflow_uri"),
    }
)
# How a refusal names the options it knows; any other is named by its flag.
REFUSAL_NAMES = {
    "augment": "augmentation",
    "max_norm": "max-norm",
    "normalize": "normalization",
    "compile": "--compile",
    "bf16": "--bf16",
}


def refusals(config: Config) -> list[str]:
    """What in this recipe stacking cannot do (empty: the seeds can be stacked)."""
    defaults = type(config)()  # its own class: a Config with more fields has their defaults too
    return [
        REFUSAL_NAMES.get(f.name, "--" + f.name.replace("_", "-"))
        for f in dataclasses.fields(config)
        if f.name not in IMPLEMENTED and getattr(config, f.name) != getattr(defaults, f.name)
    ]


def check_stackable(config: Config, seeds: Sequence[int]) -> None:
    used = refusals(config)
    if used:
        raise OverfitlabError(
            f"seeds cannot be trained stacked with {', '.join(used)}: train them one by one"
        )
    if len(seeds) < 1 or len(set(seeds)) != len(seeds):
        raise OverfitlabError(f"stacked training needs distinct seeds, got {list(seeds)}")


@dataclass
class _Member(StartedRun):
    """One seed's run, set up as ``train`` sets it up; trained by the stack."""

    diverged: str | None = None  # the message, once its loss is no longer finite

    @property
    def training(self) -> bool:
        return self.diverged is None and not self.trainer.should_stop


def train_seeds(
    config: Config,
    seeds: Sequence[int],
    run_dirs: Sequence[str | os.PathLike[str]] | None = None,
    data: DataSet | None = None,
) -> list[RunResult]:
    """Train ``config`` once per seed, all seeds at once (the config's own seed is ignored);
    with ``run_dirs``, one run folder per seed. Returns each seed's RunResult, in order."""
    config = resolved(config).replace(dropout_impl="torch")  # vmap draws the masks
    with run_scope(config.threads, config.device):  # the caller's threads and RNG back after
        return _train_stacked(config, list(seeds), run_dirs, data)


def _train_stacked(
    config: Config,
    seeds: list[int],
    run_dirs: Sequence[str | os.PathLike[str]] | None,
    data: DataSet | None,
) -> list[RunResult]:
    check_stackable(config, seeds)
    if run_dirs is not None and len(run_dirs) != len(seeds):
        raise OverfitlabError(f"{len(seeds)} seeds need {len(seeds)} run folders, got {len(run_dirs)}")
    no_dirs: list[str | os.PathLike[str] | None] = [None] * len(seeds)
    dirs = run_dirs or no_dirs
    members = [
        _Member(**vars(start_run(config.replace(seed=seed), run_dir, data=data)))
        for seed, run_dir in zip(seeds, dirs, strict=True)
    ]
    for member in members:
        if member.early_stopping is not None:
            member.early_stopping.on_fit_start(member.trainer)
    device = members[0].trainer.device
    stack = _Stack(config, [m.trainer.model for m in members], device)
    train = [m.data.train.to(device) for m in members]
    valid = members[0].data.valid.to(device)  # the same validation set for every member
    try:
        for epoch in range(1, config.epochs + 1):
            started = time.perf_counter()
            trained = stack.train_epoch(train, [m.trainer.generator for m in members])
            ended_training = time.perf_counter()
            valid_loss, valid_acc = stack.evaluate(valid)
            ended = time.perf_counter()
            share = len(members)  # the stack's time, shared evenly: what each member cost
            for s, member in enumerate(members):
                if member.training:
                    record = epoch_record(
                        epoch,
                        float(trained["loss"][s]),
                        float(trained["acc"][s]),
                        float(trained["penalty"][s]),
                        float(valid_loss[s]),
                        float(valid_acc[s]),
                        config.lr,
                        (ended_training - started) / share,
                        (ended - ended_training) / share,
                        (ended - started) / share,
                    )
                    _end_epoch(member, stack, s, epoch, record, trained)
            if not any(m.training for m in members):
                break
    except KeyboardInterrupt:
        for member in members:
            if not member.training:  # stopped early or diverged before: its run is over
                _ended(member)
                continue
            member.recorder.flush(member.trainer)
            end_run(
                member.trainer,
                member.recorder,
                member.early_stopping,
                member.config,
                member.run_dir,
                "interrupted",
                f"after epoch {member.trainer.epoch}",
            )
        raise Interrupted(interrupted_message(members[0].trainer.epoch, None)) from None
    return [_ended(member) for member in members]


def _end_epoch(
    member: _Member, stack: _Stack, s: int, epoch: int, record: dict[str, float], trained: StackedEpoch
) -> None:
    """Member ``s``'s epoch, as its own run ends one: history, weights and optimizer state
    in its trainer, its early stopping and recorder told (in the trainer's order)."""
    trainer = member.trainer
    trainer.history.add_epoch(record)
    trainer.history.add_batches(epoch, trained["batch_loss"][s], trained["batch_acc"][s])
    trainer.epoch = epoch
    stack.copy_member(s, trainer)
    if member.early_stopping is not None:
        member.early_stopping.on_epoch_end(trainer, epoch, record)
    member.recorder.on_epoch_end(trainer, epoch, record)
    if not math.isfinite(record["train_loss"]) and not trainer.should_stop:
        member.diverged = diverged_message(record["train_loss"], epoch)


def _ended(member: _Member) -> RunResult:
    """How ``train`` ends a run: the last epoch written, the best weights restored where
    early stopping says so, the summary."""
    es = member.early_stopping
    if es is not None:
        es.on_fit_end(member.trainer)  # the best weights back, where it restores them
    member.recorder.on_fit_end(member.trainer)
    ending = ("diverged", member.diverged) if member.diverged is not None else finished(es, member.config)
    return end_run(member.trainer, member.recorder, es, member.config, member.run_dir, *ending)


class StackedEpoch(TypedDict):
    """What ``_Stack.train_epoch`` returns: per member (the first dimension), the epoch's
    mean loss, accuracy and penalty, and each batch's loss and accuracy."""

    loss: torch.Tensor
    acc: torch.Tensor
    penalty: torch.Tensor
    batch_loss: list[list[float]]
    batch_acc: list[list[float]]


class _Stack:
    """The members' stacked weights, their optimizer, and one vmapped step."""

    def __init__(self, config: Config, models: list[nn.Module], device: torch.device):
        self.config = config
        self.size = len(models)
        self.loss_fn = loss_function(config.label_smoothing)
        self.params, self.buffers = stack_module_state(models)
        self.base = copy.deepcopy(models[0]).to("meta")  # the layers; the weights come from the stack

        def forward(
            params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], x: torch.Tensor
        ) -> torch.Tensor:
            outputs: torch.Tensor = functional_call(self.base, (params, buffers), (x,))
            return outputs

        self.forward_each = vmap(forward, randomness="different")  # every member its own batch
        self.forward_shared = vmap(forward, in_dims=(0, 0, None), randomness="different")
        names = {id(p): name for name, p in models[0].named_parameters()}
        # The groups and penalties of a single run, each parameter swapped for its stack.
        groups = [
            {**group, "params": [self.params[names[id(p)]] for p in group["params"]]}
            for group in param_groups(models[0], config.weight_decay, config.penalize_all)
        ]
        self.penalized = [
            self.params[names[id(p)]] for p in penalized_parameters(models[0], config.penalize_all)
        ]
        self.optimizer = optimizer_for(config, groups, flat=False)  # torch's foreach update of the stacks

    def _penalty(self) -> torch.Tensor:
        """Per member: the single run's penalty (the sum over members is what is minimized)."""
        l1, l2 = self.config.l1, self.config.l2

        def penalty(weights: list[torch.Tensor]) -> torch.Tensor:
            value = Regularization(l1, l2, weights).penalty()
            assert value is not None  # called only when l1 or l2 is set
            return value

        return vmap(penalty)(self.penalized)

    def train_epoch(self, splits: list[Split], generators: list[torch.Generator]) -> StackedEpoch:
        self.base.train()
        size = self.config.batch_size
        batches = datalib.epoch_batches(len(splits[0]), size, self.config.max_batches)
        orders = [
            torch.randperm(len(split), generator=g).to(split.labels.device)
            for split, g in zip(splits, generators, strict=True)
        ]
        losses = torch.empty(self.size, batches)
        corrects = torch.empty(self.size, batches)
        penalties = torch.zeros(self.size)
        for b in range(batches):
            picks = [order[b * size : (b + 1) * size] for order in orders]
            x = torch.stack([Scaling.unit(s.images[i]) for s, i in zip(splits, picks, strict=True)])
            y = torch.stack([s.labels[i] for s, i in zip(splits, picks, strict=True)])
            outputs = self.forward_each(self.params, self.buffers, x)  # (members, batch, classes)
            loss = self.loss_fn(outputs.flatten(0, 1), y.flatten(), reduction="none")
            loss = loss.view(self.size, -1).mean(1)  # each member's batch mean
            penalty = self._penalty() if self.config.l1 or self.config.l2 else None
            objective = loss.sum() if penalty is None else (loss + penalty).sum()
            self.optimizer.zero_grad(set_to_none=True)
            objective.backward()
            self.optimizer.step()
            losses[:, b] = loss.detach().cpu()
            corrects[:, b] = (outputs.detach().argmax(-1) == y).sum(1).cpu()
            if penalty is not None:
                penalties += penalty.detach().cpu()
        return {
            "loss": losses.double().mean(1),
            "acc": corrects.double().sum(1) / (batches * size),
            "penalty": penalties / batches,
            "batch_loss": losses.double().tolist(),
            "batch_acc": (corrects.double() / size).tolist(),
        }

    @torch.inference_mode()
    def evaluate(self, split: Split) -> tuple[torch.Tensor, torch.Tensor]:
        """Per member: mean loss and accuracy over every validation image."""
        self.base.eval()
        loss_sum = torch.zeros(self.size, dtype=torch.float64)
        correct = torch.zeros(self.size, dtype=torch.int64)
        for images, labels in datalib.eval_batches(split, self.config.valid_batch_size):
            outputs = self.forward_shared(self.params, self.buffers, Scaling.unit(images))
            targets = labels.expand(self.size, -1)
            loss_sum += (
                self.loss_fn(outputs.flatten(0, 1), targets.flatten(), reduction="none")
                .view(self.size, -1)
                .sum(1)
                .double()
                .cpu()
            )
            correct += (outputs.argmax(-1) == targets).sum(1).cpu()
        return loss_sum / len(split), correct.double() / len(split)

    def copy_member(self, s: int, trainer: Trainer) -> None:
        """Member ``s``'s weights, buffers and optimizer state into its own run's trainer."""
        with torch.no_grad():
            state = {name: tensor[s] for name, tensor in {**self.params, **self.buffers}.items()}
            trainer.model.load_state_dict(state)
        stacked = self.optimizer.state_dict()
        trainer.optimizer.load_state_dict(
            {
                "state": {
                    key: {
                        name: value[s] if torch.is_tensor(value) and value.dim() > 0 else value
                        for name, value in entry.items()
                    }
                    for key, entry in stacked["state"].items()
                },
                "param_groups": stacked["param_groups"],
            }
        )
