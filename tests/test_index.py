"""The run index: exact row shape, metrics from run files, concurrent writers, rebuild."""

from __future__ import annotations

import math
import multiprocessing
import sqlite3

import pytest

from overfitlab.errors import OverfitlabError
from overfitlab.studies.index import RUN_COLUMNS, RunIndex, run_metrics
from overfitlab.studies.loop import run_study
from overfitlab.studies.spec import make_spec

RUN_KEYS = {
    "run_id",
    "study",
    "variant",
    "seed",
    "grid_field",
    "grid_value",
    "config",
    "status",
    "error",
    "started_at",
    "ended_at",
    "seconds",
    "epochs_run",
    "best_epoch",
    "stopped_epoch",
    "stop_reason",
    "final_epoch",
    "peak_valid_acc",
    "lowest_valid_loss",
    "final_train_acc",
    "final_valid_acc",
    "final_train_loss",
    "final_valid_loss",
    "final_gap_acc",
    "final_gap_loss",
    "params",
    "run_dir",
}
STUDY_KEYS = {
    "name",
    "spec",
    "created_at",
    "seeds",
    "backend",
    "workers",
    "threads",
    "wall_seconds",
    "status",
    "environment",
}


def row(run_id: str, **values) -> dict:
    study = run_id.split("/")[0]
    return {"run_id": run_id, "study": study, "status": "pending", **values}


def test_rows_have_exactly_the_documented_keys_and_round_trip(tmp_path):
    with RunIndex(tmp_path / "index.sqlite") as index:
        index.upsert_run(
            row(
                "s/a-s0",
                variant="a",
                seed=0,
                grid_field="train_size",
                grid_value=300,
                config={"lr": 0.01, "train_size": None},
                peak_valid_acc=0.5,
                final_gap_loss=math.nan,
            )
        )
        index.upsert_study(
            {
                "name": "s",
                "spec": {"variants": [{"name": "a"}]},
                "seeds": [0, 1],
                "environment": {"torch": "x"},
                "workers": 2,
            }
        )
        (got,) = index.runs()
        assert set(got) == RUN_KEYS == set(RUN_COLUMNS)
        # JSON columns come back as Python values; "300" would come back as int even as TEXT
        # affinity, so check the type of a str grid value too.
        assert got["grid_value"] == 300 and got["config"] == {"lr": 0.01, "train_size": None}
        assert got["peak_valid_acc"] == 0.5
        assert got["final_gap_loss"] is None  # NaN is stored as NULL
        index.upsert_run(row("s/b-s0", grid_value="300"))
        assert index.run("s/b-s0")["grid_value"] == "300"
        study = index.study("s")
        assert set(study) == STUDY_KEYS
        assert study["seeds"] == [0, 1] and study["environment"] == {"torch": "x"} and study["workers"] == 2
        assert index.study("nope") is None
        assert [s["name"] for s in index.studies()] == ["s"]


def test_upsert_replaces_and_keeps_the_planned_order(tmp_path):
    with RunIndex(tmp_path / "index.sqlite") as index:
        index.upsert_runs([{**row(f"s/{name}"), "position": i} for i, name in enumerate(["z", "a", "m"])])
        index.upsert_run(row("s/a", status="complete", peak_valid_acc=0.9))  # no position: keeps its own
        index.upsert_run(row("t/b"))
        assert [r["run_id"] for r in index.runs("s")] == ["s/z", "s/a", "s/m"]
        assert index.run("s/a")["status"] == "complete" and index.run("s/a")["peak_valid_acc"] == 0.9
        assert [r["run_id"] for r in index.runs()] == ["s/z", "s/a", "s/m", "t/b"]
        assert len(index.runs("t")) == 1


def test_bad_records_are_refused(tmp_path):
    with RunIndex(tmp_path / "index.sqlite") as index:
        with pytest.raises(OverfitlabError, match="unknown run field.*valid fields are run_id"):
            index.upsert_run(row("s/a", best_acc=1.0))
        with pytest.raises(OverfitlabError, match="unknown run status 'done'.*pending"):
            index.upsert_run(row("s/a", status="done"))
        with pytest.raises(OverfitlabError, match="needs run_id"):
            index.upsert_run({"study": "s", "status": "pending"})
        assert index.runs() == []  # the failed writes left nothing behind


def test_index_is_in_wal_mode_with_a_busy_timeout(tmp_path):
    RunIndex(tmp_path / "index.sqlite").close()
    db = sqlite3.connect(tmp_path / "index.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    with RunIndex(tmp_path / "index.sqlite") as index:
        assert index._db.execute("PRAGMA busy_timeout").fetchone()[0] >= 10_000


def test_a_corrupt_index_says_how_to_recover(tmp_path):
    (tmp_path / "index.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(OverfitlabError, match="runs rebuild"):
        RunIndex(tmp_path / "index.sqlite")


# --------------------------------------------------------------------------- metrics
def epochs(*rows):
    keys = ("epoch", "train_loss", "train_acc", "valid_loss", "valid_acc")
    return [dict(zip(keys, r, strict=True)) for r in rows]


HISTORY = epochs(
    (1, 1.0, 0.5, 0.9, 0.6), (2, 0.5, 0.8, 0.7, 0.75), (3, 0.2, 0.95, 0.8, 0.8), (4, 0.1, 1.0, 0.95, 0.78)
)


def test_metrics_without_early_stopping_are_the_last_epoch():
    m = run_metrics(
        {"best_epoch": 2, "stopped_epoch": None, "stop_reason": "completed", "params": 7},
        HISTORY,
        {"early_stopping": False},
    )
    assert m["final_epoch"] == 4 and m["epochs_run"] == 4 and m["params"] == 7
    assert m["peak_valid_acc"] == 0.8 and m["lowest_valid_loss"] == 0.7  # each its own best epoch
    assert (m["final_train_acc"], m["final_valid_acc"]) == (1.0, 0.78)
    assert m["final_gap_acc"] == pytest.approx(1.0 - 0.78)
    assert m["final_gap_loss"] == pytest.approx(0.95 - 0.1)


def test_metrics_with_restored_early_stopping_are_the_best_epoch():
    summary = {"best_epoch": 2, "stopped_epoch": 4, "stop_reason": "patience", "params": 7}
    m = run_metrics(summary, HISTORY, {"early_stopping": True, "restore_best": True})
    assert m["final_epoch"] == 2 and m["stopped_epoch"] == 4 and m["stop_reason"] == "patience"
    assert m["final_gap_acc"] == pytest.approx(0.8 - 0.75)
    assert m["final_gap_loss"] == pytest.approx(0.7 - 0.5)
    # Without restoring, the returned model is the last one.
    assert run_metrics(summary, HISTORY, {"early_stopping": True, "restore_best": False})["final_epoch"] == 4


def test_metrics_skip_non_finite_values():
    history = epochs((1, 1.0, 0.5, 0.9, 0.6), (2, math.nan, 0.1, None, 0.1))
    m = run_metrics({"best_epoch": 1}, history, {})
    assert m["lowest_valid_loss"] == 0.9 and m["peak_valid_acc"] == 0.6
    assert m["final_epoch"] == 2 and m["final_train_loss"] is None and m["final_gap_loss"] is None
    assert m["final_gap_acc"] == pytest.approx(0.1 - 0.1)


# --------------------------------------------------------------------------- concurrency
def _writer(path: str, prefix: str, count: int) -> None:
    index = RunIndex(path)
    for i in range(count):  # one transaction each: the worst case for lock contention
        index.upsert_run(
            {
                "run_id": f"{prefix}/r{i}",
                "study": prefix,
                "status": "complete",
                "seed": i,
                "peak_valid_acc": i / count,
            }
        )
    index.close()


def test_concurrent_writer_processes_lose_nothing(tmp_path):
    path = str(tmp_path / "index.sqlite")
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_writer, args=(path, f"w{k}", 150)) for k in range(4)]
    for w in writers:
        w.start()
    for w in writers:
        w.join(120)
        assert w.exitcode == 0
    with RunIndex(path) as index:
        rows = index.runs()
    assert len(rows) == 600
    for k in range(4):
        assert sorted(r["seed"] for r in rows if r["study"] == f"w{k}") == list(range(150))


# --------------------------------------------------------------------------- rebuild
def comparable(rows):
    return sorted(rows, key=lambda r: r["run_id"])


def test_rebuild_from_folders_equals_the_index_the_study_wrote(tmp_path):
    spec = make_spec(
        {"train_size": 100, "epochs": 2, "hidden": 4, "batch_size": 50},
        [("baseline", {}), ("es", {"early_stopping": True, "patience": 1}), ("bad", {"batch_size": 500})],
        seeds=[3, 5],
    )
    run_study(spec, tmp_path, "one", threads=1, report=False)
    run_study(
        make_spec(
            {"train_size": 100, "epochs": 1, "hidden": 4},
            [("baseline", {})],
            seeds=1,
            grid=("l2", [0.0, 0.01]),
        ),
        tmp_path,
        "two",
        threads=1,
        report=False,
    )
    with RunIndex(tmp_path / "index.sqlite") as index:
        before_runs, before_studies = index.runs(), index.studies()
    assert len(before_runs) == 6 + 2
    assert sum(r["status"] == "failed" for r in before_runs) == 2
    (tmp_path / "index.sqlite").unlink()
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"index.sqlite{suffix}").unlink(missing_ok=True)
    with RunIndex(tmp_path / "index.sqlite") as index:
        assert index.rebuild(tmp_path) == 8
        assert index.runs() == before_runs  # same rows, same order
        assert index.studies() == before_studies
        # Rebuilding over a live index replaces, never duplicates.
        index.rebuild(tmp_path)
        assert index.runs() == before_runs
