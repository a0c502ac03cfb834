"""``find_label_issues``: out-of-fold probabilities over every split of a data set, then
confident learning's flags, ranking and count, written where a person can act on them."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import store
from ..config import Config, apply_overrides, data_options
from ..data.dataset import DataSet
from ..data.registry import load_dataset
from ..errors import OverfitlabError
from ..runs.train import train
from .crossfit import Pool, crossfit
from .issues import LabelIssues, find_issues

CSV_FILE = "label-issues.csv"
JSON_FILE = "label-issues.json"
RECIPE_FILE = "recipe.json"


@dataclass(frozen=True)
class Search:
    """How the out-of-fold probabilities are made: folds, epochs per fold, the epochs whose
    softmax is averaged, and test-time shifts. Chosen by ``benchmarks.label_issues``."""

    folds: int
    epochs: int
    last: int
    tta: bool


# Measured by ``python -m benchmarks.label_issues --options`` (10,000 Fashion-MNIST images, 500
# labels flipped, 3 seeds): the flips among the 500 lowest-ranked images (precision at k), and
# seconds on 2 cores. Quick, the plain search: 0.813 in 6.5 s. Standard: 0.859 in 14.7 s (4
# epochs alone 0.818 in 15 s; averaging the last 2 0.847; shifted copies 0.830; both 0.859).
# Full: 0.869 in 29.8 s. More folds did not help (8 folds × 4 epochs: 0.807 in 26.5 s).
BUDGETS = {
    "quick": Search(folds=4, epochs=2, last=1, tta=False),
    "standard": Search(folds=4, epochs=4, last=2, tta=True),
    "full": Search(folds=4, epochs=8, last=4, tta=True),
}


def _pool(config: Config, data: DataSet | None) -> Pool:
    if config.train_size is not None or config.label_noise:
        raise OverfitlabError("labels scores every image of every split: drop --train-size and --label-noise")
    if config.classes is not None:
        # Its list numbers images as the whole data set does, which --exclude and --relabel read.
        raise OverfitlabError("labels scores every image of every class: drop --classes")
    return Pool.of(data if data is not None else load_dataset(config.dataset, options=data_options(config)))


def find_label_issues(
    overrides: Mapping[str, Any] | None = None,
    runs_dir: str | os.PathLike[str] | None = "runs",
    name: str | None = None,
    budget: str = "standard",
    folds: int | None = None,
    resume: bool = False,
    data: DataSet | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> LabelIssues:
    """Label issues in every split of the recipe's data set (or ``data``), from models that
    never trained on the image they score. With ``runs_dir`` the folds, the CSV and the JSON
    are kept in ``runs_dir/name``; ``resume`` finishes a search of the same recipe."""
    if budget not in BUDGETS:
        raise OverfitlabError(f"unknown budget {budget!r}: choose one of {', '.join(BUDGETS)}")
    search = BUDGETS[budget]
    if folds is not None:
        if folds < 2:
            raise OverfitlabError(f"--folds {folds}: at least 2, so that every image is held out once")
        search = Search(folds, search.epochs, search.last, search.tta)
    recipe = {"epochs": search.epochs, **(overrides or {})}
    config = apply_overrides(Config(), recipe, "the recipe")
    started = time.perf_counter()
    pool = _pool(config, data)
    record = {"recipe": recipe, "budget": budget, "folds": search.folds}
    folder = None
    if runs_dir is not None:
        name = store.check_name(name or store.generated_name("labels"))
        folder = Path(runs_dir) / name
        if resume:
            if not (folder / RECIPE_FILE).is_file():
                raise OverfitlabError(f"no label search {name} in {runs_dir} to resume: pass its name")
            if store.read_json(folder / RECIPE_FILE) != record:
                raise OverfitlabError(
                    f"label search {name} was run with another recipe, budget or --folds: resume it "
                    "without them, or start a new one with --name"
                )
        elif folder.exists():
            raise OverfitlabError(f"{folder} already exists: pass --resume {name}, or another --name")
    loaded = time.perf_counter()
    # A folder this search made goes again if it fails before its recipe is written.
    scope = (
        store.removed_on_failure(folder, keep=(folder / RECIPE_FILE).is_file)
        if folder is not None
        else contextlib.nullcontext()
    )
    with scope:
        if folder is not None:
            store.ensure_folder(folder, "label search folder", "--runs-dir")
            store.write_json(folder / RECIPE_FILE, record)
        probabilities = crossfit(
            config, pool, search.folds, folder, train, last=search.last, tta=search.tta, progress=progress
        )
    fitted = time.perf_counter()
    found = find_issues(probabilities, pool.labels.numpy(), pool.splits, pool.indices, pool.class_names)
    found.recipe = recipe
    found.folder = folder
    found.seconds = {
        "load": round(loaded - started, 2),
        "out_of_fold": round(fitted - loaded, 2),
        "confident_learning": round(time.perf_counter() - fitted, 2),
    }
    if folder is not None:
        store.atomic_write(folder / CSV_FILE, found.csv())
        store.write_json(folder / JSON_FILE, found.to_dict())
    return found
