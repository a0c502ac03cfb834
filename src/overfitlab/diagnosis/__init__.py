"""The diagnosis: does the model over-fit, would more data help, which remedy, how sure. Typed
results, pure analyses, the parts that train, the verdict, the battery and its page."""

from .battery import diagnose as diagnose
from .results import Diagnosis as Diagnosis

__all__ = ["Diagnosis", "diagnose"]
