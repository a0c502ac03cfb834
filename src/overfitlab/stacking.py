"""Several seeds of one recipe trained at once: one model's layers over stacked weights.

``train_seeds(config, seeds)`` builds each seed's model as its own run would
(``torch.manual_seed(seed)`` before the weights, its training subset, batches
from ``Generator().manual_seed(seed)``), stacks the weights with
``torch.func.stack_module_state`` and runs every step for all of them through
``torch.func.vmap``: each kernel launch does the work of S runs. Small CNNs
spend most of a step launching kernels on a GPU, which is what stacking is for;
it has not been measured on one yet. On a 2-core CPU it does not pay: a bare
training step of 3 stacked seeds of the digits recipe was 8 % faster than three
separate steps, but whole runs were slower (3 seeds of the ``remedies``
baseline, one thread: 4.1 s stacked, 3.1 s one after another), the stacking of
batches and the vmapped validation costing more than the launches saved.

Each member's gradient is its own loss's: the members' losses (and penalties)
are summed, and no parameter is shared. The numbers equal separate runs up to
rounding, not bit for bit: stacked kernels (a grouped convolution) add in
another order, and dropout masks come from vmap's random stream, not the run's.
So this is a recipe choice to record, never a silent backend.

Not supported here (refused with one line): early stopping, augmentation,
max-norm, normalization, ``--compile`` and ``--bf16``. The result holds each
member's History and model in memory; writing run folders and using it from
studies is still to come.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from . import data as datalib
from .config import Config
from .data import Scaling
from .errors import OverfitlabError
from .history import History
from .regularizers import param_groups, penalized_parameters
from .run import build_model, loss_function, resolve_device, resolve_threads, resolved
from .trainer import Regularization, epoch_record

UNSUPPORTED = {"early_stopping": "early stopping", "augment": "augmentation", "max_norm": "max-norm",
               "normalize": "normalization", "compile": "--compile", "bf16": "--bf16"}


@dataclass
class MemberResult:
    seed: int
    history: History
    model: nn.Module  # the member's weights after the last epoch, in an ordinary model


def check_stackable(config: Config, seeds: Sequence[int]) -> None:
    used = [label for name, label in UNSUPPORTED.items() if getattr(config, name)]
    if used:
        raise OverfitlabError(f"seeds cannot be trained stacked with {', '.join(used)}: "
                              "train them one by one")
    if len(seeds) < 1 or len(set(seeds)) != len(seeds):
        raise OverfitlabError(f"stacked training needs distinct seeds, got {list(seeds)}")


def train_seeds(config: Config, seeds: Sequence[int]) -> list[MemberResult]:
    """Train ``config`` once per seed, all seeds at once; the config's own seed is ignored."""
    config = resolved(config).replace(dropout_impl="torch")  # vmap draws the masks
    seeds = list(seeds)
    check_stackable(config, seeds)
    torch.set_num_threads(resolve_threads(config.threads))
    device = resolve_device(config.device)
    full = datalib.load_dataset(config.dataset, config.data_dir, config.download)
    splits, models = [], []
    for seed in seeds:
        data = datalib.prepare(full, config.train_size, config.label_noise, seed)
        torch.manual_seed(seed)  # the weights its own run would start from
        models.append(build_model(config, data.image_shape, data.classes).to(device))
        splits.append(data)
    stack = _Stack(config, models, device)
    histories = [History() for _ in seeds]
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    train = [d.train.to(device) for d in splits]
    valid = splits[0].valid.to(device)  # one validation set for every member
    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        trained = stack.train_epoch(train, generators)
        ended_training = time.perf_counter()
        valid_loss, valid_acc = stack.evaluate(valid)
        ended = time.perf_counter()
        members = len(seeds)  # the stack's time, shared evenly: what each member cost
        for s, history in enumerate(histories):
            history.add_epoch(epoch_record(
                epoch, float(trained["loss"][s]), float(trained["acc"][s]), float(trained["penalty"][s]),
                float(valid_loss[s]), float(valid_acc[s]), config.lr, (ended_training - started) / members,
                (ended - ended_training) / members, (ended - started) / members))
            history.add_batches(epoch, trained["batch_loss"][s], trained["batch_acc"][s])
    return [MemberResult(seed, history, stack.member(s, models[s]))
            for s, (seed, history) in enumerate(zip(seeds, histories))]


class _Stack:
    """The members' stacked weights, their optimizer, and one vmapped step."""

    def __init__(self, config: Config, models: list[nn.Module], device: torch.device):
        self.config = config
        self.size = len(models)
        self.loss_fn = loss_function(config.label_smoothing)
        self.params, self.buffers = stack_module_state(models)
        self.base = copy.deepcopy(models[0]).to("meta")  # the layers; the weights come from the stack

        def forward(params, buffers, x):
            return functional_call(self.base, (params, buffers), (x,))

        self.forward_each = vmap(forward, randomness="different")  # every member its own batch
        self.forward_shared = vmap(forward, in_dims=(0, 0, None), randomness="different")
        names = {id(p): name for name, p in models[0].named_parameters()}
        # The groups and penalties of a single run, each parameter swapped for its stack.
        groups = [{**group, "params": [self.params[names[id(p)]] for p in group["params"]]}
                  for group in param_groups(models[0], config.weight_decay, config.penalize_all)]
        self.penalized = [self.params[names[id(p)]]
                          for p in penalized_parameters(models[0], config.penalize_all)]
        self.optimizer = _optimizer(config, groups)

    def _penalty(self) -> torch.Tensor:
        """Per member: the single run's penalty (the sum over members is what is minimized)."""
        l1, l2 = self.config.l1, self.config.l2
        return vmap(lambda weights: Regularization(l1, l2, weights).penalty())(self.penalized)

    def train_epoch(self, splits: list[datalib.Split], generators: list[torch.Generator]) -> dict:
        self.base.train()
        size = self.config.batch_size
        batches = datalib.batch_count(len(splits[0]), size, drop_last=True)
        if self.config.max_batches is not None:
            batches = min(batches, self.config.max_batches)
        if batches == 0:
            raise OverfitlabError(f"no full batch: {len(splits[0])} training images < batch size {size}")
        orders = [torch.randperm(len(split), generator=g).to(split.labels.device)
                  for split, g in zip(splits, generators)]
        losses = torch.empty(self.size, batches)
        corrects = torch.empty(self.size, batches)
        penalties = torch.zeros(self.size)
        for b in range(batches):
            picks = [order[b * size:(b + 1) * size] for order in orders]
            x = torch.stack([Scaling.unit(s.images[i]) for s, i in zip(splits, picks)])
            y = torch.stack([s.labels[i] for s, i in zip(splits, picks)])
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
        return {"loss": losses.double().mean(1), "acc": corrects.double().sum(1) / (batches * size),
                "penalty": penalties / batches, "batch_loss": losses.double().tolist(),
                "batch_acc": (corrects.double() / size).tolist()}

    @torch.inference_mode()
    def evaluate(self, split: datalib.Split) -> tuple[torch.Tensor, torch.Tensor]:
        """Per member: mean loss and accuracy over every validation image."""
        self.base.eval()
        loss_sum = torch.zeros(self.size, dtype=torch.float64)
        correct = torch.zeros(self.size, dtype=torch.int64)
        for images, labels in datalib.eval_batches(split, self.config.valid_batch_size):
            outputs = self.forward_shared(self.params, self.buffers, Scaling.unit(images))
            targets = labels.expand(self.size, -1)
            loss_sum += self.loss_fn(outputs.flatten(0, 1), targets.flatten(), reduction="none"
                                     ).view(self.size, -1).sum(1).double().cpu()
            correct += (outputs.argmax(-1) == targets).sum(1).cpu()
        return loss_sum / len(split), correct.double() / len(split)

    def member(self, s: int, model: nn.Module) -> nn.Module:
        """Member ``s``'s weights and buffers copied into ``model`` (its own, unstacked)."""
        state = {name: tensor[s].detach().clone() for name, tensor in {**self.params, **self.buffers}.items()}
        model.load_state_dict(state)
        return model


def _optimizer(config: Config, groups: list[dict]) -> torch.optim.Optimizer:
    if config.optimizer in ("adam", "adamw"):
        cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
        return cls(groups, lr=config.lr, foreach=True)
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov,
                           foreach=True)
