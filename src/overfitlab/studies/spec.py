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
    read_toml,
    to_dict,
    unknown_key_error,
)
from ..errors import OverfitlabError

DEFAULT_SEEDS = 3
SPEC_KEYS = ("name", "description", "seeds", "base", "variant", "grid")
GRID_KEYS = ("field", "values")
# The study sets these per run: a variant changing them would break the paired design
# or make a run's numbers depend on where it ran.
STUDY_FIELDS = ("seed", "threads")


# --------------------------------------------------------------------------- spec
@dataclass(frozen=True)
class Variant:
    name: str
    overrides: dict[str, Any] = field(default_factory=dict)


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

    def with_seeds(self, seeds: int | Sequence[int]) -> StudySpec:
        return dataclasses.replace(self, seeds=parse_seeds(seeds, "--seeds"))

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
            "variants": [{"name": v.name, "overrides": dict(v.overrides)} for v in self.variants],
            "seeds": list(self.seeds),
            "grid": {"field": self.grid.field, "values": list(self.grid.values)} if self.grid else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StudySpec:
        grid = data.get("grid")
        return make_spec(
            base=data.get("base") or {},
            variants=[(v["name"], v.get("overrides") or {}) for v in data.get("variants") or []],
            seeds=data.get("seeds", DEFAULT_SEEDS),
            grid=(grid["field"], grid["values"]) if grid else None,
            name=data.get("name"),
            description=data.get("description") or "",
            where="study spec",
        )


def parse_seeds(seeds: Any, where: str) -> tuple[int, ...]:
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if seeds < 1:
            raise OverfitlabError(f"{where}: seeds must be ≥ 1, got {seeds}")
        return tuple(range(seeds))
    if (
        isinstance(seeds, (list, tuple))
        and seeds
        and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
    ):
        if len(set(seeds)) != len(seeds):
            raise OverfitlabError(f"{where}: seeds repeat in {list(seeds)}: list each seed once")
        return tuple(seeds)
    raise OverfitlabError(
        f"{where}: seeds must be a count (3) or a list of seeds ≥ 0 ([0, 1, 2]), got {seeds!r}"
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
        checked.append(Variant(variant_name, check_overrides(overrides, f"{where} variant {variant_name!r}")))
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
    return StudySpec(dict(base), tuple(checked), parse_seeds(seeds, where), parsed_grid, name, description)


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
                    {k: x for k, x in v.items() if k != "name"}, f"{where} variant {v.get('name')!r}"
                ),
            )
            for v in variants
        ],
        seeds=document.get("seeds", DEFAULT_SEEDS),
        grid=grid,
        name=document.get("name"),
        description=document.get("description", ""),
        where=where,
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
    """Every run of the spec: variants × grid values × seeds, the same seeds for each variant."""
    plans = []
    grid_values = spec.grid.values if spec.grid else (None,)
    for variant in spec.variants:
        for value in grid_values:
            for seed in spec.seeds:
                overrides = {**spec.base, **variant.overrides}
                if spec.grid:
                    overrides[spec.grid.field] = value
                overrides["seed"] = seed
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
