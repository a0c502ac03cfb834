"""The built-in studies: ``remedies`` (each remedy against an over-fitting baseline) and
``data-size`` (the baseline at growing training-set sizes), on the built-in digits."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import OverfitlabError
from .spec import StudySpec, make_spec

# --------------------------------------------------------------------------- presets
# The tutorial's over-fitting set-up on the built-in digits: 300 training images and a CNN
# without any remedy reach 100 % train accuracy within ~15 epochs; by epoch 60 the valid
# loss has climbed back ~30 % above its minimum. A run takes a few seconds on one thread.
REMEDIES_BASE = {
    "dataset": "digits",
    "train_size": 300,
    "model": "seed-cnn",
    "hidden": 16,
    "batchnorm": False,
    "dropout": 0.0,
    "head": "fc",
    "epochs": 60,
}
# Each strength picked from a short sweep (seeds 0-2, 1 thread) as the value with the lowest
# final valid loss: l1 1e-5/1e-4/1e-3 (1e-3 collapses to chance on one seed), l2
# 1e-4/3e-4/1e-3/1e-2 (1e-2 collapses), AdamW weight decay 0.01/0.1/0.5, dropout 0.2/0.3/0.5.
# Augmentation has no strength to tune: shifts scale with the image (±0.57 px on 8×8 digits)
# and rotations are ±10°; on seed 0 it lifts the best valid accuracy from 0.964 to 0.973.
REMEDIES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("baseline", {}),
    ("early-stopping", {"early_stopping": True, "patience": 5}),
    ("l1", {"l1": 1e-4}),
    ("l2", {"l2": 3e-4}),
    ("weight-decay", {"optimizer": "adamw", "weight_decay": 0.1}),
    ("batchnorm", {"batchnorm": True}),
    ("dropout", {"dropout": 0.3}),
    ("gap-head", {"head": "gap"}),
    ("augmentation", {"augment": True}),
    ("more-data", {"train_size": None}),
)
# Every remedy at once, on the same 300 images: more data is the reference, not a remedy
# one can apply. Stacked, the remedies over-regularize; the study measures by how much.
ALL_REMEDIES = {
    k: v
    for name, overrides in REMEDIES
    if name not in ("baseline", "more-data")
    for k, v in overrides.items()
}
# On a model that starts from weights (--init, --pretrained): how far to let them move, and
# the same model from random weights, which says what the weights bring (it may be nothing:
# the README's transfer study). Strengths as fastai's and Lightning's defaults (freeze_epochs
# 1-2, backbone rates 0.1×), L2-SP's λ from Li et al. 2018's range.
FINE_TUNING: tuple[tuple[str, dict[str, Any]], ...] = (
    ("scratch", {"init": None, "pretrained": None}),
    ("freeze", {"freeze": True}),
    ("head-first", {"freeze_epochs": 2}),
    ("gradual", {"unfreeze_every": 2}),
    ("discriminative", {"body_lr_ratio": 0.1}),
    ("reinit-head", {"reinit_head": True}),
    ("l2-sp", {"l2_sp": 1e-3}),
)
ADDS_WEIGHTS = ("batchnorm", "gap-head")  # remedies that change the model's tensors
DATA_SIZES = (75, 150, 300, 600, 1347)  # 1347: every digits training image


def tuning_remedies(base: Mapping[str, Any] | None) -> list[tuple[str, dict[str, Any]]]:
    """The fine-tuning remedies when the recipe starts from weights, else none."""
    if base is None or not (base.get("init") or base.get("pretrained")):
        return []
    # A variant the recipe already is (--reinit-head given) would compare the baseline to itself.
    return [(name, o) for name, o in FINE_TUNING if any(base.get(k) != v for k, v in o.items())]


PRESETS = {
    "remedies": "each remedy alone, and all together, against an over-fitting baseline",
    "data-size": "the over-fitting baseline at growing training set sizes",
}


def remedies_for(base: Mapping[str, Any] | None) -> list[tuple[str, dict[str, Any]]]:
    """The remedies preset's variants for a recipe with the options ``base``: every remedy, and
    all at once; on a model that starts from weights, fine-tuning's too, and none that adds
    layers with weights (batch norm, the GAP head), which could not start from the same ones."""
    tuning = tuning_remedies(base)
    kept = [(name, o) for name, o in REMEDIES if not (tuning and name in ADDS_WEIGHTS)]
    weighted = {key for name, o in REMEDIES if name in ADDS_WEIGHTS for key in o}  # batchnorm, head
    every = {k: v for k, v in ALL_REMEDIES.items() if not (tuning and k in weighted)}
    return [*kept, *tuning, ("all-remedies", every)]


def preset(
    name: str, seeds: int | Sequence[int] | str = "auto", base: Mapping[str, Any] | None = None
) -> StudySpec:
    """A built-in study: ``remedies`` or ``data-size``. ``seeds="auto"``: the remedies in
    stages of seeds, each stage only for those still undecided; the data-size grid, 3 seeds.
    ``base``: the options the recipe will be given (``with_base``); when they start from
    weights, the remedies include fine-tuning's."""
    if name == "remedies":
        return make_spec(
            REMEDIES_BASE,
            remedies_for(base),
            seeds,
            name="remedies",
            description=PRESETS[name],
            where="preset remedies",
        )
    if name == "data-size":
        base = {k: v for k, v in REMEDIES_BASE.items() if k != "train_size"}
        return make_spec(
            base,
            [("baseline", {})],
            seeds,
            grid=("train_size", DATA_SIZES),
            name="data-size",
            description=PRESETS[name],
            where="preset data-size",
        )
    raise OverfitlabError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
