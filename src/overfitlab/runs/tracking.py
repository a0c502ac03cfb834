"""MLflow tracking: each run of a run folder as an MLflow run (optional extra ``mlflow``).

A run is logged from its folder once it has ended (``config.toml``, ``history.json``,
``summary.json``, ``curves.png``), by the process that owns the folder: ``overfitlab
train`` after training, a study's own process as each of its runs comes back. So the
tracking store has one writer, never a pool of workers fighting over it, and what
MLflow holds is what the folder holds:

- params: the resolved config (``config.toml``), one param per field;
- metrics: every epoch's numbers with ``step`` = the epoch, then the summary's
  headline numbers (``overfitlab.metrics``: final valid acc, final gap, ...);
- tags: stop reason, data set, and for a study's run the study, variant and seed,
  nested under a parent run named after the study;
- artifacts: ``curves.png`` and ``summary.json``.

Nothing is sent anywhere unless the user gave a tracking URI: the default store is
SQLite in the runs folder (``<runs>/mlflow.db``, artifacts in ``<runs>/mlartifacts``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import store
from ..config import load_toml, to_dict
from ..errors import OverfitlabError
from ..metrics import LABELS

MLFLOW_MISSING = "--mlflow needs MLflow: pip install 'overfitlab[mlflow]'"
EXPERIMENT = "overfitlab"
DATABASE = "mlflow.db"
ARTIFACTS = "mlartifacts"
# Summary numbers logged once (no step): the words of overfitlab.metrics.
SUMMARY_METRICS = (*LABELS, "epochs_run", "train_seconds", "params")
_BATCH = 900  # MLflow takes at most 1000 metrics per log_batch


def default_uri(runs_dir: str | Path) -> str:
    return f"sqlite:///{Path(runs_dir).resolve() / DATABASE}"


def require_mlflow() -> Any:
    try:
        import mlflow
    except ImportError:
        raise OverfitlabError(MLFLOW_MISSING) from None
    return mlflow


class Tracker:
    """Logs run folders to one MLflow tracking store, in one experiment."""

    def __init__(self, uri: str, artifacts: Path, experiment: str = EXPERIMENT) -> None:
        require_mlflow()
        from mlflow.tracking import MlflowClient

        self.uri = uri
        try:
            self.client = MlflowClient(tracking_uri=uri)
            found = self.client.get_experiment_by_name(experiment)
            self.experiment_id = (
                found.experiment_id
                if found is not None
                else self.client.create_experiment(experiment, artifact_location=artifacts.resolve().as_uri())
            )
        except Exception as err:  # a bad URI, an unreachable server: MLflow's many error types
            raise OverfitlabError(
                f"cannot use the MLflow tracking store {uri} ({type(err).__name__}: {err}): "
                "check --mlflow-uri"
            ) from None

    @classmethod
    def for_runs(cls, runs_dir: str | Path, uri: str | None) -> Tracker:
        return cls(uri or default_uri(runs_dir), Path(runs_dir) / ARTIFACTS)

    def parent(self, study: str) -> str:
        """The parent run of a study (found again when the study is resumed)."""
        found = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`overfitlab.study_parent` = '{study}'", max_results=1
        )
        if found:
            return str(found[0].info.run_id)
        run = self.client.create_run(
            self.experiment_id, run_name=study, tags={"overfitlab.study_parent": study}
        )
        return str(run.info.run_id)

    def end_parent(self, run_id: str, complete: bool) -> None:
        self.client.set_terminated(run_id, "FINISHED" if complete else "FAILED")

    def log_run(
        self, run_dir: str | Path, parent: str | None = None, tags: Mapping[str, Any] | None = None
    ) -> str:
        """Log one ended run folder as an MLflow run; returns the MLflow run id."""
        from mlflow.entities import Metric, Param

        run_dir = Path(run_dir)
        summary = store.read_json(run_dir / store.SUMMARY_JSON)
        history = (
            store.read_json(run_dir / store.HISTORY_JSON) if (run_dir / store.HISTORY_JSON).is_file() else {}
        )
        config = to_dict(load_toml(run_dir / store.CONFIG)) if (run_dir / store.CONFIG).is_file() else {}
        all_tags = {
            "overfitlab.run_dir": str(run_dir.resolve()),
            "overfitlab.stop_reason": str(summary.get("stop_reason")),
            "overfitlab.dataset": str(summary.get("dataset")),
            **{f"overfitlab.{k}": str(v) for k, v in (tags or {}).items()},
        }
        if parent is not None:
            all_tags["mlflow.parentRunId"] = parent
        run = self.client.create_run(self.experiment_id, run_name=run_dir.name, tags=all_tags)
        run_id = str(run.info.run_id)
        now = int(time.time() * 1000)
        metrics = [
            Metric(key, float(value), now, int(epoch["epoch"]))
            for epoch in history.get("epochs", [])
            for key, value in epoch.items()
            if key != "epoch" and _finite(value)
        ]
        metrics += [Metric(k, float(summary[k]), now, 0) for k in SUMMARY_METRICS if _finite(summary.get(k))]
        params = [Param(k, str(v)) for k, v in config.items() if v is not None]
        for start in range(0, max(len(metrics), 1), _BATCH):
            self.client.log_batch(
                run_id, metrics=metrics[start : start + _BATCH], params=params if start == 0 else []
            )
        for name in (store.CURVES, store.SUMMARY_JSON):
            if (run_dir / name).is_file():
                self.client.log_artifact(run_id, str(run_dir / name))
        ended = summary.get("stop_reason")
        status = {"interrupted": "KILLED", "diverged": "FAILED"}.get(str(ended), "FINISHED")
        self.client.set_terminated(run_id, status)
        return run_id


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
