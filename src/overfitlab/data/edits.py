"""Acting on label issues: images left out of their split (``exclude``) or given another label
(``relabel``), read from the CSV ``overfitlab labels`` writes or from a list of indices."""

from __future__ import annotations

import csv
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import OverfitlabError
from .dataset import DataSet
from .split import Split

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class Edits:
    exclude: dict[str, frozenset[int]] = field(default_factory=dict)  # split → positions
    relabel: dict[str, dict[int, int]] = field(default_factory=dict)  # split → position → label

    def count(self) -> int:
        return sum(len(v) for v in self.exclude.values()) + sum(len(v) for v in self.relabel.values())


def _int(text: str, path: Path, line: int, column: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise OverfitlabError(f"{path}, line {line}: {column} {text!r} is not a whole number") from None
    if value < 0:
        raise OverfitlabError(f"{path}, line {line}: {column} {value} is negative")
    return value


def read_rows(path: str, flag: str, label: bool) -> list[tuple[str, int, int]]:
    """(split, index, label) rows: a CSV with columns split and index (and ``suggested`` when
    ``label``), as ``overfitlab labels`` writes; or, for ``exclude``, training-set indices
    separated by commas or new lines."""
    file = Path(path).expanduser()
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise OverfitlabError(
            f"{flag} {path}: no such file (pass the label-issues.csv of `overfitlab labels`)"
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise OverfitlabError(f"{flag} {path}: cannot read it ({err})") from None
    first = text.lstrip().split("\n", 1)[0]
    if "index" not in first:
        if label:
            raise OverfitlabError(f"{flag} {path}: needs a CSV with columns split, index and suggested")
        items = [t.strip() for t in text.replace(",", "\n").splitlines() if t.strip()]
        return [("train", _int(t, file, k + 1, "index"), -1) for k, t in enumerate(items)]
    reader = csv.DictReader(text.splitlines())
    needed = ["split", "index"] + (["suggested"] if label else [])
    missing = [c for c in needed if c not in (reader.fieldnames or [])]
    if missing:
        raise OverfitlabError(
            f"{flag} {path}: no column {', '.join(missing)} (it has {', '.join(reader.fieldnames or [])})"
        )
    rows = []
    for line, row in enumerate(reader, start=2):
        if row["split"] not in SPLITS:
            raise OverfitlabError(
                f"{path}, line {line}: split {row['split']!r} is none of {', '.join(SPLITS)}"
            )
        new = _int(row["suggested"], file, line, "suggested") if label else -1
        rows.append((row["split"], _int(row["index"], file, line, "index"), new))
    return rows


def read_edits(exclude: str | None, relabel: str | None) -> Edits:
    out = Edits()
    for split, index, _ in read_rows(exclude, "--exclude", False) if exclude else []:
        out.exclude[split] = out.exclude.get(split, frozenset()) | {index}
    for split, index, new in read_rows(relabel, "--relabel", True) if relabel else []:
        out.relabel.setdefault(split, {})[index] = new
    return out


def _edited(split: Split, name: str, drop: frozenset[int], new: dict[int, int], classes: int) -> Split:
    n = len(split)
    wrong = sorted(i for i in (*drop, *new) if i >= n)
    if wrong:
        raise OverfitlabError(
            f"the {name} split has {n} images, but the list names index {wrong[0]}: is it the list of "
            "another data set?"
        )
    bad = sorted(v for v in new.values() if v >= classes)
    if bad:
        raise OverfitlabError(f"--relabel gives label {bad[0]}, but the data set has {classes} classes")
    labels = split.labels.clone()
    for i, label in new.items():
        labels[i] = label
    keep = torch.ones(n, dtype=torch.bool)
    keep[list(drop)] = False
    return Split(split.images[keep], labels[keep])


def apply_edits(data: DataSet, edits: Edits) -> DataSet:
    """The data set with the listed images relabelled, then left out, split by split."""
    if not edits.count():
        return data
    splits = {"train": data.train, "valid": data.valid, "test": data.test}
    for name in (*edits.exclude, *edits.relabel):
        if splits.get(name) is None:
            raise OverfitlabError(f"the list names the {name} split, which the data set {data.name} has not")

    def edited(name: str, split: Split | None) -> Split | None:
        if split is None or (name not in edits.exclude and name not in edits.relabel):
            return split
        return _edited(
            split, name, edits.exclude.get(name, frozenset()), edits.relabel.get(name, {}), data.classes
        )

    train, valid = edited("train", data.train), edited("valid", data.valid)
    assert train is not None and valid is not None
    return dataclasses.replace(data, train=train, valid=valid, test=edited("test", data.test))


def select_classes(data: DataSet, classes: tuple[int, ...]) -> DataSet:
    """Only the images of ``classes`` (``--classes 5-9``), in every split, numbered anew from 0 in
    the order given, their names kept: the half of a data set a transfer experiment holds out."""
    beyond = [c for c in classes if c >= data.classes]
    if beyond:
        raise OverfitlabError(
            f"--classes: {data.name} has classes 0-{data.classes - 1}, not {beyond[0]}: name classes it has"
        )
    mapping = torch.full((data.classes,), -1, dtype=torch.int64)
    mapping[list(classes)] = torch.arange(len(classes))

    def kept(split: Split | None) -> Split | None:
        if split is None:
            return None
        new = mapping[split.labels]
        return Split(split.images[new >= 0], new[new >= 0])

    names = tuple(data.class_names[c] for c in classes) if data.class_names else tuple(map(str, classes))
    train, valid = kept(data.train), kept(data.valid)
    assert train is not None and valid is not None
    return dataclasses.replace(
        data, train=train, valid=valid, test=kept(data.test), classes=len(classes), class_names=names
    )
