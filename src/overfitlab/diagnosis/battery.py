"""``diagnose``: the battery that runs every part within a budget and writes the diagnosis."""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import stats, store
from ..config import Config, apply_overrides, data_options
from ..data.dataset import DataSet
from ..data.registry import load_dataset
from ..errors import OverfitlabError
from ..history import History
from ..labels.issues import find_issues, installed
from ..models.factory import ARCHITECTURE_OPTIONS
from ..runs.build import SELECTION, selected_data, train_origins
from ..runs.train import train
from ..sequential import Answer
from ..studies.loop import run_study
from ..studies.presets import REMEDIES_BASE, remedies_for
from ..studies.result import decision_dict
from ..studies.spec import make_spec
from .analyses import learning_curve, measure_overfitting, noisy_labels, remedy_family, sizes_above
from .experiments import (
    _out_of_fold_saved,
    _subset,
    _test_accuracy,
    carve_test,
    memorised_images,
    random_labels,
)
from .report import write_report
from .results import (
    BUDGETS,
    DIAGNOSIS_JSON,
    LABEL_ISSUES,
    OUT_OF_FOLD,
    REPORT,
    Budget,
    Diagnosis,
    Interval,
    LabelCheck,
    Remedies,
)
from .verdict import verdict


def check_budget(config: Config, data: DataSet, budget: Budget) -> int:
    """The largest training size; one line when the smallest size cannot train."""
    largest = config.train_size or len(data.train)
    if largest > len(data.train):
        raise OverfitlabError(
            f"train size {largest} is larger than the {len(data.train)} training images the battery "
            f"has (its test split held out): pass --train-size {len(data.train)} or less"
        )
    smallest = int(largest * min(budget.sizes))
    minimum = max(2 * config.batch_size, 2 * data.classes)
    if smallest < minimum:
        raise OverfitlabError(
            f"the learning curve's smallest size, {smallest} images ({min(budget.sizes):.0%} of {largest}), "
            f"is under {minimum} (two batches of {config.batch_size}): pass a larger --train-size "
            f"(at least {math.ceil(minimum / min(budget.sizes))}) or a smaller --batch-size"
        )
    return largest


def check_labels(
    probabilities: np.ndarray,
    labels: np.ndarray,
    positions: np.ndarray,
    names: Sequence[str] | None,
    folder: Path,
) -> LabelCheck | None:
    """Part 5's flags by confident learning, written to LABEL_ISSUES in the folder; None
    without the labels extra (the gallery's ranking needs no cleanlab)."""
    if not installed():
        return None
    found = find_issues(probabilities, labels, ["train"] * len(labels), positions, names or ())
    store.atomic_write(folder / LABEL_ISSUES, found.csv())
    e = found.estimated
    return LabelCheck(len(labels), len(found.issues), e.estimate, e.low, e.high, LABEL_ISSUES)


def curve_sizes(budget: Budget, largest: int, available: int) -> dict[int, str]:
    """Part 2's sizes, smallest first, each with the variant that trains it: the recipe's
    fractions of its size (the baseline is its own size), then the sizes above it."""
    below = {int(largest * f): f"size-{int(largest * f)}" for f in budget.sizes if f < 1}
    above = {n: f"size-{n}" for n in sizes_above(largest, available, budget.above)}
    return dict(sorted({**below, largest: "baseline", **above}.items()))


def plan_variants(
    budget: Budget, largest: int, available: int, base: Mapping[str, Any] | None = None
) -> list[tuple[str, dict[str, Any]]]:

    variants: list[tuple[str, dict[str, Any]]] = [("baseline", {})]
    variants += [
        (variant, {"train_size": size})
        for size, variant in curve_sizes(budget, largest, available).items()
        if variant != "baseline"
    ]
    variants += [(f"noise-{round(p * 100)}", {"label_noise": p}) for p in budget.noise]
    variants += [(name, o) for name, o in remedies_for(base) if name not in ("baseline", "more-data")]
    return variants


def diagnose(
    overrides: Mapping[str, Any] | None = None,
    runs_dir: str | os.PathLike[str] = "runs",
    name: str | None = None,
    budget: str = "standard",
    backend: str = "local",
    workers: int | None = None,
    resume: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
    first_seed: int = 0,
) -> Diagnosis:
    """Run the battery on the recipe (the remedies preset's baseline with ``overrides``) into
    ``runs_dir/name``: its study, diagnosis.json and diagnosis.html."""

    if budget not in BUDGETS:
        raise OverfitlabError(f"unknown budget {budget!r}: choose one of {', '.join(BUDGETS)}")
    plan = BUDGETS[budget]
    started = time.perf_counter()
    base = {**REMEDIES_BASE, **(overrides or {})}
    if "dataset" in (overrides or {}) and "train_size" not in (overrides or {}):
        # The preset's 300 images make the digits over-fit; a data set of one's own is diagnosed
        # on all of its training images unless --train-size says otherwise.
        base.pop("train_size")
    if "model" in (overrides or {}) and overrides and overrides["model"] != REMEDIES_BASE["model"]:
        base = {k: v for k, v in base.items() if k not in ARCHITECTURE_OPTIONS or k in overrides}
    config = apply_overrides(Config(), base, "the diagnosed recipe")

    # Edited and its classes kept once, here, as every run would: the runs, and parts 3 and 5,
    # get these images with a recipe that selects nothing more (the test split is carved after).
    loaded = load_dataset(config.dataset, options=data_options(config))
    full, origin = selected_data(config, loaded), train_origins(config, loaded)
    config = config.replace(**dict.fromkeys(SELECTION))
    run_base = {k: v for k, v in base.items() if k not in SELECTION}
    data, test, test_source, kept = carve_test(full)
    largest = check_budget(config, data, plan)
    name = store.check_name(name or store.generated_name("diagnosis"))
    folder = Path(runs_dir) / name
    if resume:
        saved = folder / "recipe.json"
        if not saved.is_file():
            raise OverfitlabError(f"no diagnosis {name} in {runs_dir} to resume: pass its name")
        before = store.read_json(saved)
        if {"first_seed": 0, **before} != {"recipe": base, "budget": budget, "first_seed": first_seed}:
            raise OverfitlabError(
                f"diagnosis {name} was run with another recipe or budget: resume it without flags, "
                "or start a new one with --name"
            )
    elif folder.exists():
        raise OverfitlabError(f"{folder} already exists: pass --resume {name}, or another --name")
    variants = plan_variants(plan, largest, len(data.train), base)
    spec = make_spec(
        run_base,
        variants,
        plan.seeds,
        name=name,
        where="the diagnosis",
        max_seeds=plan.max_seeds,
        first_seed=first_seed,
    )
    # Decided in stages: the remedies only (the sizes and noise levels describe, they are not remedies).
    compared = remedy_family([name for name, _ in variants], left_out=())
    spec = dataclasses.replace(spec, compared=tuple(name for name in compared if name != "baseline"))
    with store.removed_on_failure(folder, keep=lambda: (folder / "recipe.json").is_file()):
        store.ensure_folder(folder, "diagnosis folder", "--runs-dir")
        store.write_json(folder / "recipe.json", {"recipe": base, "budget": budget, "first_seed": first_seed})
    total = len(spec.variants) * len(spec.stage_seeds()[0]) + 1 + plan.folds

    def tell(part: str, done: int) -> None:
        if progress is not None:
            progress(part, done, total)

    counter = {"done": 0}

    def on_run(row: dict[str, Any], done: int, all_runs: int) -> None:
        counter["done"] = done
        tell("runs of parts 1, 2, 4 and 6 (baseline, sizes, noisy labels, remedies)", done)

    study = run_study(
        spec,
        folder,
        "study",
        backend=backend,
        workers=workers,
        resume=resume and (folder / "study" / "study.json").is_file(),
        progress=on_run,
        data=data,
    )
    by_variant: dict[str, list[dict[str, Any]]] = {}
    for row in study.runs:
        if row["status"] == "complete":
            by_variant.setdefault(row["variant"], []).append(row)

    def histories(variant: str) -> list[History]:
        return [
            History.from_dict(store.read_json(Path(r["run_dir"]) / store.HISTORY_JSON))
            for r in by_variant.get(variant, [])
        ]

    if not by_variant.get("baseline"):
        raise OverfitlabError(
            f"no baseline run completed in {folder / 'study'}: see its report for the errors"
        )
    overfitting = measure_overfitting(histories("baseline"))

    def finals(variant: str, key: str) -> dict[int, float]:
        return {int(r["seed"]): float(r[key]) for r in by_variant.get(variant, []) if r.get(key) is not None}

    sized = {s: v for s, v in curve_sizes(plan, largest, len(data.train)).items() if by_variant.get(v)}
    curve = learning_curve(
        list(sized),
        [finals(v, "final_valid_acc") for v in sized.values()],
        [finals(v, "final_train_acc") for v in sized.values()],
        recipe_size=largest,
        available=len(data.train),
        classes=data.classes,
    )
    tell("part 3: random labels", counter["done"] + 1)
    subset, chosen = _subset(data, config)  # parts 3 and 5 train on the recipe's training subset
    positions = origin[kept[chosen]].numpy()  # their places in the data set's train split
    memorised = random_labels(config, subset, folder, train)
    noise = tuple(noisy_labels(p, histories(f"noise-{round(p * 100)}")) for p in plan.noise)
    tell("part 5: out-of-fold predictions", counter["done"] + 2)
    probabilities, labels = _out_of_fold_saved(config, subset, plan.folds, train, folder / OUT_OF_FOLD)
    gallery = memorised_images(subset.train.images, probabilities, labels, plan.gallery, positions)
    label_check = check_labels(probabilities, labels, positions, data.class_names, folder)

    # The remedies are one family for Holm's adjustment; the sizes and noise levels are not remedies.
    family = remedy_family([v.name for v in spec.variants], study.left_out)
    remedy_rows = [r for r in study.runs if r["variant"] in family]
    table = stats.comparisons_table(remedy_rows, family)
    helping = [d for d in study.decisions if d.answer is Answer.HELPS]
    recommended = helping[0].variant if helping else None  # the largest effect comes first
    test_of = _test_accuracy(by_variant, test, data)
    remedies = Remedies(
        table,
        recommended,
        Interval.of(test_of("baseline"), "logit"),
        Interval.of(test_of(recommended), "logit") if recommended else None,
        test_source,
        tuple(decision_dict(d) for d in study.decisions),
        study.question,
        spec.margin,
    )
    names = data.class_names or tuple(str(i) for i in range(data.classes))
    diagnosis = Diagnosis(
        recipe=base,
        budget=budget,
        overfitting=overfitting,
        learning_curve=curve,
        memorisation=memorised,
        noisy_labels=noise,
        gallery=gallery,
        remedies=remedies,
        wall_seconds=time.perf_counter() - started,
        class_names=tuple(names),
        folder=folder,
        label_check=label_check,
    )
    diagnosis.verdict = verdict(diagnosis)
    store.write_json(folder / DIAGNOSIS_JSON, diagnosis.to_dict())

    write_report(diagnosis, folder / REPORT)
    return diagnosis
