"""Label issues from out-of-fold probabilities: ranked, counted, and written for a person to act
on (pure: no training here).

What is whose: the probabilities are ours (``labels.crossfit``, models that never trained on the
image they score); the ranking score, the filter that flags an image and the estimate of how many
images are mislabelled are confident learning's, computed by cleanlab (Northcutt et al. 2021):
``filter.find_label_issues`` (pruned by the noise rates of the confident joint, ranked by
self-confidence: the probability of the given label) and
``count.num_label_issues`` (the confident joint's off-diagonal count). The interval of that count
resamples the images (a bootstrap of cleanlab's estimate on the same probabilities)."""

from __future__ import annotations

import csv
import importlib.util
import io
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import OverfitlabError

CSV_COLUMNS = ("rank", "split", "index", "given", "suggested", "score", "given_name", "suggested_name")
RESAMPLES = 200


@dataclass(frozen=True)
class LabelIssue:
    split: str  # train, valid or test: the split the image is in
    index: int  # its position in that split, as the data set orders it
    given: int  # the label it has
    suggested: int  # the label the out-of-fold models find most likely
    score: float  # the out-of-fold probability of the given label: low is suspect


@dataclass(frozen=True)
class Count:
    estimate: int
    low: int
    high: int


LOWEST = 100  # images kept in ``lowest``, flagged or not


@dataclass
class LabelIssues:
    issues: tuple[LabelIssue, ...]  # flagged by confident learning, lowest score first
    estimated: Count  # images estimated mislabelled, all splits together
    images: dict[str, int]  # images scored per split
    accuracy: float  # out-of-fold accuracy of the suggested labels against the given ones
    confusion: list[list[int]]  # flagged images: [given][suggested] counts
    class_names: tuple[str, ...] = ()
    recipe: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # per part
    folder: Path | None = None  # where the folds, the CSV and the JSON are kept
    # The LOWEST images by score whether flagged or not: what a person looks through first where
    # the filter flags few (a model near 99 % on MNIST is confident of most of its errors).
    lowest: tuple[LabelIssue, ...] = ()

    def rows(self, top: int | None = None, lowest: bool = False) -> list[dict[str, Any]]:
        """The flagged images as rows (``lowest``: the lowest-scored images, each marked
        flagged or not)."""
        names = self.class_names
        flagged = {(i.split, i.index) for i in self.issues}
        return [
            {
                "rank": rank,
                **asdict(issue),
                "given_name": names[issue.given] if names else str(issue.given),
                "suggested_name": names[issue.suggested] if names else str(issue.suggested),
                **({"flagged": (issue.split, issue.index) in flagged} if lowest else {}),
            }
            for rank, issue in enumerate((self.lowest if lowest else self.issues)[:top], start=1)
        ]

    def csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in self.rows():
            writer.writerow({**row, "score": f"{row['score']:.6f}"})
        return buffer.getvalue()

    def to_dict(self, top: int | None = None) -> dict[str, Any]:
        return {
            "estimated": asdict(self.estimated),
            "flagged": len(self.issues),
            "images": self.images,
            "out_of_fold_accuracy": self.accuracy,
            "confusion": self.confusion,
            "class_names": list(self.class_names),
            "recipe": self.recipe,
            "seconds": self.seconds,
            "folder": str(self.folder) if self.folder else None,
            "issues": self.rows(top),
            "lowest": self.rows(lowest=True),
        }


def installed() -> bool:
    """Whether cleanlab (the labels extra) can be imported."""
    return importlib.util.find_spec("cleanlab") is not None


def _cleanlab() -> Any:
    try:
        # optional: the labels extra
        import cleanlab.count
        import cleanlab.filter
    except ImportError:
        raise OverfitlabError(
            "finding label issues needs cleanlab: pip install 'overfitlab[labels]'"
        ) from None
    return cleanlab


def self_confidence(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The probability of each image's given label (confident learning's self-confidence)."""
    out: np.ndarray = probabilities[np.arange(len(labels)), labels]
    return out


def estimated_count(
    probabilities: np.ndarray, labels: np.ndarray, seed: int = 0, resamples: int = RESAMPLES
) -> Count:
    """cleanlab's estimate of the mislabelled images, with a 95 % percentile interval over
    bootstrap resamples of the images."""
    cleanlab = _cleanlab()
    estimate = int(cleanlab.count.num_label_issues(labels, probabilities))
    rng = np.random.default_rng(seed)
    n, classes = len(labels), probabilities.shape[1]
    draws = []
    for _ in range(resamples):
        pick = rng.integers(0, n, n)
        if len(np.unique(labels[pick])) < classes:
            continue
        draws.append(cleanlab.count.num_label_issues(labels[pick], probabilities[pick]))
    if not draws:
        return Count(estimate, estimate, estimate)
    low, high = np.quantile(draws, [0.025, 0.975])
    return Count(estimate, int(math.floor(low)), int(math.ceil(high)))


def find_issues(
    probabilities: np.ndarray,
    labels: np.ndarray,
    splits: Sequence[str] | np.ndarray,
    indices: np.ndarray,
    class_names: Sequence[str] = (),
    seed: int = 0,
) -> LabelIssues:
    """Flag, rank and count from out-of-fold probabilities (N, K) of images whose given labels,
    split names and positions in their split are ``labels``, ``splits`` and ``indices``."""
    cleanlab = _cleanlab()
    labels = np.asarray(labels, dtype=np.int64)
    flagged = cleanlab.filter.find_label_issues(
        labels, probabilities, return_indices_ranked_by="self_confidence"
    )
    score = self_confidence(probabilities, labels)
    suggested = probabilities.argmax(1)
    classes = probabilities.shape[1]
    confusion = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(confusion, (labels[flagged], suggested[flagged]), 1)

    def issue(i: int) -> LabelIssue:
        return LabelIssue(str(splits[i]), int(indices[i]), int(labels[i]), int(suggested[i]), float(score[i]))

    issues = tuple(issue(i) for i in flagged)
    lowest = tuple(issue(i) for i in np.argsort(score, kind="stable")[:LOWEST])
    counts = {str(name): n for name, n in Counter(splits).items()}
    return LabelIssues(
        issues,
        estimated_count(probabilities, labels, seed),
        counts,
        float((suggested == labels).mean()),
        confusion.tolist(),
        tuple(class_names),
        lowest=lowest,
    )
