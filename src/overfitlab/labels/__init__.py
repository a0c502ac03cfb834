"""Mislabelled images: out-of-fold probabilities over every split, confident learning's flags."""

from .crossfit import Pool, crossfit, fold_of
from .finder import BUDGETS, find_label_issues
from .issues import LabelIssue, LabelIssues, find_issues

__all__ = [
    "BUDGETS",
    "LabelIssue",
    "LabelIssues",
    "Pool",
    "crossfit",
    "find_issues",
    "find_label_issues",
    "fold_of",
]
