"""A study's spec: base recipe, variants, seeds, an optional grid; and its expansion into runs.

The spec file format is ``studies.loop``'s docstring; ``expand`` turns a spec into one
``RunPlan`` per variant × grid value × seed, the same seeds for every variant (a paired design).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import store
from ..config import (
    FIELDS,
    Config,
    apply_overrides,
    flatten_toml,
    from_dict,
    to_dict,
    unknown_key_error,
)
from ..errors import OverfitlabError
from ..tomltext import read_toml

DEFAULT_SEEDS = 3
MAX_SEEDS = 10  # --seeds auto spends at most this many seeds on a remedy: stages of 5 and 5
MARGIN = 0.01  # δ: an effect on held-out accuracy within one point is "no effect"
SPEC_KEYS = ("name", "description", "seeds", "max_seeds", "first_seed", "margin", "base", "variant", "grid")
GRID_KEYS = ("field", "values")
# The study sets these per run: a variant changing them would break the paired design
# or make a run's numbers depend on where it ran.
STUDY_FIELDS = ("seed", "threads")


# --------------------------------------------------------------------------- spec
@dataclass(frozen=True)
class Variant:
    name: str
    overrides: dict[str, Any] = field(default_factory=dict)
    # Its runs train on seed + offset but pair with the baseline's run of the seed: a copy of
    # the baseline with an offset is an A/A comparison (same recipe, independent seed stream).
    seed_offset: int = 0


@dataclass(frozen=True)
class Grid:
    field: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class StudySpec:
    base: dict[str, Any]
    variants: tuple[Variant, ...]
    seeds: tuple[int, ...] = tuple(range(DEFAULT_SEEDS))
    grid: Grid | None = None
    name: str | None = None
    description: str = ""
    # Seeds in stages (``--seeds auto``): the seeds split into these counts, each stage given
    # only to the remedies still undecided (and the baseline). Empty: every seed at once.
    stages: tuple[int, ...] = ()
    margin: float = MARGIN  # δ: "no effect" means within ±δ of the baseline's accuracy
    # The remedies decided on (the family of the multiplicity adjustment); empty: every variant
    # but the baseline. The diagnosis's sizes and noise levels are variants, not remedies.
    compared: tuple[str, ...] = ()

    def with_seeds(self, seeds: Any = None, max_seeds: int = MAX_SEEDS, first_seed: int = 0) -> StudySpec:
        """``"auto"``: seeds in stages up to ``max_seeds``; a count or a list: those, at once;
        None: the spec's own kind (auto, or as many as it has) from ``first_seed``."""
        if seeds is None:
            seeds = "auto" if self.stages else len(self.seeds)
        seeds, stages = parse_seeds(seeds, "--seeds", max_seeds, first_seed, self.compares)
        return dataclasses.replace(self, seeds=seeds, stages=stages)

    def with_margin(self, margin: float) -> StudySpec:
        return dataclasses.replace(self, margin=check_margin(margin, "--margin"))

    @property
    def compares(self) -> bool:
        """Remedies against a baseline, with no grid: what decisions in stages are for."""
        return self.grid is None and len(self.variants) > 1

    def stage_seeds(self) -> list[tuple[int, ...]]:
        """The seeds of each stage, in order (one stage when they are not staged)."""
        if not self.stages:
            return [self.seeds]
        edges = [sum(self.stages[:k]) for k in range(len(self.stages) + 1)]
        return [self.seeds[a:b] for a, b in zip(edges, edges[1:], strict=False)]

    def with_base(self, overrides: Mapping[str, Any]) -> StudySpec:
        """The spec with base fields changed (command-line flags over the spec's base).

        Another model in the overrides drops the base's CNN options that the overrides do not
        set: they describe the preset's CNN (a preset's ``hidden = 16``), not the new model."""
        # start-up: torch only when a spec changes a model's options
        from ..models.factory import ARCHITECTURE_OPTIONS

        kept = dict(self.base)
        if "model" in overrides and overrides["model"] != kept.get("model"):
            for key in ARCHITECTURE_OPTIONS:
                if key not in overrides:
                    kept.pop(key, None)
        base = check_overrides({**kept, **overrides}, "the base recipe", allow=("threads",))
        apply_overrides(Config(), base, "the base recipe")  # a bad base would fail every run
        return dataclasses.replace(self, base=base)

    def to_dict(self) -> dict[str, Any]:
        """The canonical form, stored in study.json and the index."""
        return {
            "name": self.name,
            "description": self.description,
            "base": dict(self.base),
            "variants": [
                {"name": v.name, "overrides": dict(v.overrides)}
                | ({"seed_offset": v.seed_offset} if v.seed_offset else {})
                for v in self.variants
            ],
            "seeds": list(self.seeds),
            "stages": list(self.stages),
            "margin": self.margin,
            "compared": list(self.compared),
            "grid": {"field": self.grid.field, "values": list(self.grid.values)} if self.grid else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StudySpec:
        grid = data.get("grid")
        spec = make_spec(
            base=data.get("base") or {},
            variants=[
                (v["name"], {**(v.get("overrides") or {}), **_offset(v)}) for v in data.get("variants") or []
            ],
            seeds=data.get("seeds", DEFAULT_SEEDS),
            grid=(grid["field"], grid["values"]) if grid else None,
            name=data.get("name"),
            description=data.get("description") or "",
            where="study spec",
        )
        # A study.json of an earlier version has neither: every seed at once, the default δ.
        stages = tuple(int(n) for n in data.get("stages") or ())
        margin = float(data.get("margin", MARGIN))
        compared = tuple(data.get("compared") or ())
        return dataclasses.replace(spec, stages=stages, margin=margin, compared=compared)


def _offset(variant: Mapping[str, Any]) -> dict[str, Any]:
    return {"seed_offset": variant["seed_offset"]} if variant.get("seed_offset") else {}


def stage_sizes(max_seeds: int) -> tuple[int, ...]:
    """Seeds per stage for ``--seeds auto --max-seeds N``: half first, the rest for the remedies
    still open (10 → 5, 5; 7 → 3, 4); under 4 seeds, one stage. Two stages of several seeds:
    each stage's own t-test loses less to its few degrees of freedom than three smaller ones
    (simulated power at +0.017 with paired std 0.01: 0.88 with 5, 5 against 0.82 with 3, 3, 4)."""
    if max_seeds < 4:
        return (max_seeds,)
    return (max_seeds // 2, max_seeds - max_seeds // 2)


def check_margin(margin: Any, where: str) -> float:
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 < margin < 1:
        raise OverfitlabError(
            f"{where}: the margin is an accuracy difference in (0, 1), e.g. 0.01; got {margin!r}"
        )
    return float(margin)


def parse_seeds(
    seeds: Any, where: str, max_seeds: int = MAX_SEEDS, first_seed: int = 0, staged: bool = True
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(seeds, stages): ``"auto"`` is ``max_seeds`` seeds from ``first_seed`` in stages (when
    the spec compares remedies; else the default count at once); a count N is N seeds from
    ``first_seed``; a list is those seeds. Stages are empty for every seed at once."""
    if isinstance(max_seeds, bool) or not isinstance(max_seeds, int) or max_seeds < 2:
        raise OverfitlabError(f"{where}: --max-seeds must be a count ≥ 2, got {max_seeds!r}")
    if isinstance(first_seed, bool) or not isinstance(first_seed, int) or first_seed < 0:
        raise OverfitlabError(f"{where}: --first-seed must be a seed ≥ 0, got {first_seed!r}")
    if seeds == "auto":
        if not staged:
            return tuple(range(first_seed, first_seed + DEFAULT_SEEDS)), ()
        return tuple(range(first_seed, first_seed + max_seeds)), stage_sizes(max_seeds)
    if isinstance(seeds, str) and seeds.isdigit():
        seeds = int(seeds)
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if seeds < 1:
            raise OverfitlabError(f"{where}: seeds must be ≥ 1 (or auto), got {seeds}")
        return tuple(range(first_seed, first_seed + seeds)), ()
    if (
        isinstance(seeds, (list, tuple))
        and seeds
        and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
    ):
        if len(set(seeds)) != len(seeds):
            raise OverfitlabError(f"{where}: seeds repeat in {list(seeds)}: list each seed once")
        return tuple(seeds), ()
    raise OverfitlabError(
        f"{where}: seeds must be auto, a count (3) or a list of seeds ≥ 0 ([0, 1, 2]), got {seeds!r}"
    )


def _optional(name: str) -> bool:
    return "None" in str(FIELDS[name].type)


def check_overrides(overrides: Mapping[str, Any], where: str, allow: Sequence[str] = ()) -> dict[str, Any]:
    """Known Config fields only (the error lists them); seed and threads belong to the study."""
    for key in overrides:
        if key not in FIELDS:
            raise unknown_key_error(key, where)
        if key in STUDY_FIELDS and key not in allow:
            what = "seeds = N or [..] in the spec, or --seeds" if key == "seed" else "--threads"
            raise OverfitlabError(
                f"{key} cannot be set in {where}: the study sets it for every run (use {what})"
            )
    # TOML has no null: "none" means "the field's default" for optional fields.
    return {
        k: (None if isinstance(v, str) and v.lower() == "none" and _optional(k) else v)
        for k, v in overrides.items()
    }


def grid_token(value: Any) -> str:
    """A grid value as it appears in run folder names."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def make_spec(
    base: Mapping[str, Any],
    variants: Sequence[tuple[str, Mapping[str, Any]]],
    seeds: Any = DEFAULT_SEEDS,
    grid: tuple[str, Sequence[Any]] | None = None,
    name: str | None = None,
    description: str = "",
    where: str = "study spec",
    max_seeds: int = MAX_SEEDS,
    first_seed: int = 0,
    margin: float = MARGIN,
) -> StudySpec:
    """Check every part of a spec; unknown fields are errors naming the valid ones."""
    base = check_overrides(base, f"{where} [base]", allow=("threads",))
    try:
        apply_overrides(Config(), base, f"{where} [base]")  # a bad base would fail every run
    except OverfitlabError as err:
        raise OverfitlabError(f"{where} [base]: {err}") from None
    checked: list[Variant] = []
    for variant_name, overrides in variants or [("baseline", {})]:
        if not isinstance(variant_name, str) or not variant_name:
            raise OverfitlabError(f'{where}: every [[variant]] needs a name = "..."')
        try:
            store.check_name(variant_name)
        except OverfitlabError as err:
            raise OverfitlabError(f"{where}: variant name: {err}") from None
        if any(v.name == variant_name for v in checked):
            raise OverfitlabError(f"{where}: two variants are named {variant_name!r}: rename one")
        overrides = dict(overrides)
        offset = overrides.pop("seed_offset", 0)
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise OverfitlabError(f"{where} variant {variant_name!r}: seed_offset must be a count ≥ 0")
        where_v = f"{where} variant {variant_name!r}"
        checked.append(Variant(variant_name, check_overrides(overrides, where_v), offset))
    parsed_grid = None
    if grid is not None:
        grid_field, values = grid
        if grid_field not in FIELDS:
            raise OverfitlabError(
                f"unknown grid field {grid_field!r} in {where}: valid fields are {', '.join(sorted(FIELDS))}"
            )
        if grid_field in STUDY_FIELDS:
            raise OverfitlabError(f"{where}: the grid cannot be over {grid_field} (the study sets it)")
        if not isinstance(values, (list, tuple)) or not values:
            raise OverfitlabError(f"{where}: grid values must be a non-empty list, got {values!r}")
        if any(v is None or isinstance(v, (dict, list)) for v in values):
            raise OverfitlabError(f"{where}: grid values must be numbers, strings or booleans")
        tokens = [grid_token(v) for v in values]
        if len(set(tokens)) != len(tokens):
            raise OverfitlabError(f"{where}: grid values repeat in {list(values)}")
        for token in tokens:
            store.check_name(token)
        parsed_grid = Grid(grid_field, tuple(values))
    if name is not None:
        store.check_name(name)
    compares = parsed_grid is None and len(checked) > 1
    seed_list, stages = parse_seeds(seeds, where, max_seeds, first_seed, compares)
    margin = check_margin(margin, f"{where}: margin")
    return StudySpec(dict(base), tuple(checked), seed_list, parsed_grid, name, description, stages, margin)


def parse_spec(document: Mapping[str, Any], where: str) -> StudySpec:
    """A spec from a TOML document (``[base]``, ``[[variant]]``, ``[grid]``)."""
    for key in document:
        if key not in SPEC_KEYS:
            raise OverfitlabError(f"unknown key {key!r} in {where}: valid keys are {', '.join(SPEC_KEYS)}")
    base = document.get("base", {})
    if not isinstance(base, dict):
        raise OverfitlabError(f"{where}: base must be a table ([base])")
    variants = document.get("variant", [])
    if not isinstance(variants, list) or not all(isinstance(v, dict) for v in variants):
        raise OverfitlabError(f"{where}: variants must be [[variant]] tables")
    grid = document.get("grid")
    if grid is not None:
        if not isinstance(grid, dict):
            raise OverfitlabError(f"{where}: grid must be a table ([grid])")
        for key in grid:
            if key not in GRID_KEYS:
                raise OverfitlabError(f"unknown key {key!r} in {where} [grid]: valid keys are field, values")
        if "field" not in grid or "values" not in grid:
            raise OverfitlabError(f'{where}: [grid] needs field = "..." and values = [...]')
        grid = (grid["field"], grid["values"])
    return make_spec(
        base=flatten_toml(base, f"{where} [base]"),
        variants=[
            (
                v.get("name"),
                flatten_toml(
                    {k: x for k, x in v.items() if k not in ("name", "seed_offset")},
                    f"{where} variant {v.get('name')!r}",
                )
                | _offset(v),
            )
            for v in variants
        ],
        seeds=document.get("seeds", DEFAULT_SEEDS),
        grid=grid,
        name=document.get("name"),
        description=document.get("description", ""),
        where=where,
        max_seeds=document.get("max_seeds", MAX_SEEDS),
        first_seed=document.get("first_seed", 0),
        margin=document.get("margin", MARGIN),
    )


def load_spec(path: str | os.PathLike[str]) -> StudySpec:
    document = read_toml(path, "study spec", "check the path, or use --preset")
    return parse_spec(document, str(path))


# --------------------------------------------------------------------------- plans
@dataclass(frozen=True)
class RunPlan:
    """One run of a study. ``config`` is None when the overrides are invalid; ``error`` says why
    (the run is then recorded as failed, and the other runs go on)."""

    name: str
    variant: str
    seed: int
    grid_field: str | None
    grid_value: Any
    config: Config | None
    error: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "variant": self.variant,
            "seed": self.seed,
            "grid_field": self.grid_field,
            "grid_value": self.grid_value,
            "config": to_dict(self.config) if self.config is not None else dict(self.overrides),
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunPlan:
        """A plan as ``to_dict`` wrote it (study.json's ``runs``): a failed plan keeps its
        overrides, a valid one its Config."""
        error = data.get("error")
        stored = dict(data.get("config") or {})
        return cls(
            data["name"],
            data["variant"],
            data["seed"],
            data.get("grid_field"),
            data.get("grid_value"),
            None if error else from_dict(stored),
            error,
            stored if error else {},
        )

    def with_absolute_data_dir(self) -> RunPlan:
        """A relative data_dir made absolute: Ray workers do not run in this directory."""
        data_dir = self.config.data_dir if self.config is not None else None
        if self.config is None or not data_dir or os.path.isabs(data_dir):
            return self
        return dataclasses.replace(self, config=self.config.replace(data_dir=os.path.abspath(data_dir)))


def run_name(variant: str, seed: int, grid_value: Any = None, has_grid: bool = False) -> str:
    return f"{variant}-{grid_token(grid_value)}-s{seed}" if has_grid else f"{variant}-s{seed}"


def expand(spec: StudySpec, threads: int | None = None) -> list[RunPlan]:
    """Every run of the spec's first stage: variants × grid values × seeds, the same seeds for
    each variant (a paired design). Without stages that is every run."""
    return plans_for(spec, spec.variants, spec.stage_seeds()[0], threads)


def plans_for(
    spec: StudySpec, variants: Sequence[Variant], seeds: Sequence[int], threads: int | None = None
) -> list[RunPlan]:
    """The runs of these variants × grid values × seeds."""
    plans = []
    grid_values = spec.grid.values if spec.grid else (None,)
    for variant in variants:
        for value in grid_values:
            for seed in seeds:
                overrides = {**spec.base, **variant.overrides}
                if spec.grid:
                    overrides[spec.grid.field] = value
                overrides["seed"] = seed + variant.seed_offset
                if threads is not None:
                    overrides["threads"] = threads
                where = f"variant {variant.name!r}" + (
                    f" at {spec.grid.field} = {value!r}" if spec.grid else ""
                )
                try:
                    config, error = apply_overrides(Config(), overrides, where), None
                except OverfitlabError as err:
                    config, error = None, f"{where}: {err}"
                plans.append(
                    RunPlan(
                        run_name(variant.name, seed, value, spec.grid is not None),
                        variant.name,
                        seed,
                        spec.grid.field if spec.grid else None,
                        value,
                        config,
                        error,
                        overrides,
                    )
                )
    return plans
