"""Studies: a spec (base recipe, variants, seeds), the built-in presets, plans, the backends
and their worker, the run index, the study loop, its result and its report."""

from .index import RunIndex as RunIndex
from .loop import run_study as run_study
from .presets import PRESETS as PRESETS
from .presets import preset as preset
from .result import StudyResult as StudyResult
from .spec import RunPlan as RunPlan
from .spec import StudySpec as StudySpec
from .spec import load_spec as load_spec
from .spec import make_spec as make_spec
from .spec import parse_spec as parse_spec

__all__ = [
    "PRESETS",
    "RunIndex",
    "RunPlan",
    "StudyResult",
    "StudySpec",
    "load_spec",
    "make_spec",
    "parse_spec",
    "preset",
    "run_study",
]
