"""Studies: spec parsing, presets, failures recorded, resume after SIGKILL, concurrent studies, CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from overfitlab.cli import main
from overfitlab.config import Config
from overfitlab.errors import OverfitlabError
from overfitlab.studies.index import RunIndex
from overfitlab.studies.loop import run_study
from overfitlab.studies.presets import ALL_REMEDIES, REMEDIES, REMEDIES_BASE, preset
from overfitlab.studies.spec import RunPlan, expand, load_spec, make_spec

TIMING = {"started_at", "ended_at", "seconds", "run_dir"}
SMALL = {"train_size": 120, "epochs": 2, "hidden": 4, "batch_size": 40}


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def without_timing(rows):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def index_rows(runs_dir: Path, study: str | None = None) -> list[dict]:
    with RunIndex(runs_dir / "index.sqlite") as index:
        return index.runs(study)


# --------------------------------------------------------------------------- spec files
SPEC_TOML = """
name = "sweep"
description = "L2 against a baseline"
seeds = [4, 7]

[base]
train_size = 300
epochs = 5
lr = 0.02

[base.model]
hidden = 4

[[variant]]
name = "baseline"

[[variant]]
name = "l2"
l2 = 1e-3
lr = 0.005

[grid]
field = "epochs"
values = [2, 3]
"""


def test_load_spec_reads_base_variants_seeds_and_grid(tmp_path):
    spec = load_spec(write(tmp_path / "s.toml", SPEC_TOML))
    assert spec.name == "sweep" and spec.seeds == (4, 7)
    assert spec.base == {"train_size": 300, "epochs": 5, "lr": 0.02, "hidden": 4}
    plans = expand(spec, threads=1)
    assert [p.name for p in plans] == [
        "baseline-2-s4",
        "baseline-2-s7",
        "baseline-3-s4",
        "baseline-3-s7",
        "l2-2-s4",
        "l2-2-s7",
        "l2-3-s4",
        "l2-3-s7",
    ]
    by_name = {p.name: p.config for p in plans}
    # Order of precedence: base, then variant, then grid value, then seed.
    assert by_name["l2-3-s7"] == Config(
        train_size=300, epochs=3, lr=0.005, hidden=4, l2=1e-3, seed=7, threads=1
    )
    assert by_name["baseline-2-s4"] == Config(train_size=300, epochs=2, lr=0.02, hidden=4, seed=4, threads=1)
    assert all(p.error is None and p.grid_field == "epochs" for p in plans)
    # The canonical form round-trips.
    assert type(spec).from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "bogus = 1",
            r"unknown key 'bogus'.*valid keys are name, description, seeds, max_seeds, first_seed, "
            "margin, base, variant, grid",
        ),
        ("[base]\nlearning_rate = 0.1", r"unknown key 'learning_rate' in .*\[base\]: did you mean lr\?"),
        ("[[variant]]\nname = 'x'\ndropuot = 0.5", r"unknown key 'dropuot' in .*variant 'x'.*dropout"),
        ("[grid]\nfield = 'size'\nvalues = [1]", r"unknown grid field 'size'.*train_size"),
        (
            "[grid]\nfield = 'l2'\nvalue = [1]",
            r"unknown key 'value' in .*\[grid\]: valid keys are field, values",
        ),
        ("[grid]\nfield = 'l2'\nvalues = []", "grid values must be a non-empty list"),
        ("[[variant]]\nname = 'x'\nseed = 3", r"seed cannot be set in .*variant 'x'.*seeds"),
        ("[[variant]]\nname = 'x'\nthreads = 3", r"threads cannot be set.*--threads"),
        ("[[variant]]\nname = 'x'\n[[variant]]\nname = 'x'", "two variants are named 'x'"),
        ("[[variant]]\nl2 = 0.1", r"every \[\[variant\]\] needs a name"),
        ("[[variant]]\nname = 'a b'", "bad run name 'a b'"),
        ("seeds = 0", "seeds must be ≥ 1"),
        ("seeds = [1, 1]", "seeds repeat"),
        ("seeds = 'three'", "seeds must be auto, a count"),
        ("[base]\nepochs = -1", r"\[base\]: epochs must be > 0"),
        ("[base]\nepochs = 'ten'", r"\[base\]: epochs must be int"),
        ("[base\n", "not valid TOML"),
    ],
)
def test_spec_errors_name_the_fix(tmp_path, text, message):
    with pytest.raises(OverfitlabError, match=message):
        load_spec(write(tmp_path / "s.toml", text))


def test_missing_spec_file(tmp_path):
    with pytest.raises(OverfitlabError, match="not found: check the path, or use --preset"):
        load_spec(tmp_path / "nope.toml")


def test_none_resets_an_optional_field_and_bad_values_fail_only_their_runs(tmp_path):
    spec = load_spec(
        write(
            tmp_path / "s.toml",
            """
        seeds = 1
        [base]
        train_size = 300
        [[variant]]
        name = "all-data"
        train_size = "none"
        [[variant]]
        name = "bad"
        dropout = 1.5
    """,
        )
    )
    full, bad = expand(spec)
    assert full.config.train_size is None and full.error is None
    assert bad.config is None and "dropout must be in [0, 1), got 1.5" in bad.error


# --------------------------------------------------------------------------- presets
def test_remedies_preset_is_a_paired_lineup():
    spec = preset("remedies", seeds=3)
    plans = expand(spec, threads=1)
    variants = [v.name for v in spec.variants]
    assert variants == [
        "baseline",
        "early-stopping",
        "l1",
        "l2",
        "weight-decay",
        "batchnorm",
        "dropout",
        "gap-head",
        "augmentation",
        "more-data",
        "all-remedies",
    ]
    assert len(plans) == 11 * 3
    for variant in variants:  # paired: every variant on the same seeds
        assert sorted(p.seed for p in plans if p.variant == variant) == [0, 1, 2]
    base = {p.seed: p.config for p in plans if p.variant == "baseline"}
    assert base[0].batchnorm is False and base[0].dropout == 0.0 and base[0].head == "fc"
    assert (base[0].l1, base[0].l2, base[0].weight_decay, base[0].early_stopping) == (0.0, 0.0, 0.0, False)
    assert base[0].train_size == REMEDIES_BASE["train_size"]
    overrides = dict(REMEDIES) | {"all-remedies": ALL_REMEDIES}
    for plan in plans:  # each variant differs from the baseline of its seed in its own fields only
        reference = base[plan.seed]
        changed = {k for k in Config.__dataclass_fields__ if getattr(plan.config, k) != getattr(reference, k)}
        assert changed == {k for k, v in overrides[plan.variant].items() if v != getattr(reference, k)}, (
            plan.name
        )
        assert all(getattr(plan.config, k) == v for k, v in overrides[plan.variant].items())
    assert plans[-1].config.train_size == REMEDIES_BASE["train_size"]  # all remedies, same data
    assert {p.config.train_size for p in plans if p.variant == "more-data"} == {None}


def test_data_size_preset_is_a_grid_over_train_size():
    plans = expand(preset("data-size", seeds=2))
    sizes = sorted({p.grid_value for p in plans})
    assert len(plans) == len(sizes) * 2 and len(sizes) >= 4
    assert all(p.config.train_size == p.grid_value and p.grid_field == "train_size" for p in plans)
    assert plans[0].name == f"baseline-{sizes[0]}-s0"
    with pytest.raises(OverfitlabError, match="unknown preset 'nope': choose one of remedies, data-size"):
        preset("nope")


# --------------------------------------------------------------------------- a small study
FAILING_SPEC = make_spec(
    SMALL,
    [
        ("baseline", {}),
        ("l2", {"l2": 1e-3}),
        ("diverges", {"optimizer": "sgd", "lr": 1e8}),  # NaN at epoch 1
        ("bad", {"dropout": 1.5}),  # invalid override
    ],
    seeds=[0, 1],
)


@pytest.fixture(scope="module")
def small_study(tmp_path_factory):
    runs_dir = tmp_path_factory.mktemp("runs")
    seen = []
    result = run_study(
        FAILING_SPEC,
        runs_dir,
        "small",
        threads=1,
        progress=lambda row, done, total: seen.append((row["run_id"], done, total)),
    )
    return runs_dir, result, seen


def test_failing_runs_are_recorded_and_the_others_complete(small_study):
    runs_dir, result, seen = small_study
    rows = index_rows(runs_dir, "small")
    status = {r["run_id"]: r["status"] for r in rows}
    assert status == {
        f"small/{v}-s{s}": ("complete" if v in ("baseline", "l2") else "failed")
        for v in ("baseline", "l2", "diverges", "bad")
        for s in (0, 1)
    }
    errors = {r["variant"]: r["error"] for r in rows if r["status"] == "failed"}
    assert "diverged" in errors["diverges"] and "nan" in errors["diverges"]
    assert "dropout must be in [0, 1), got 1.5" in errors["bad"]
    assert result.status == "failed"
    assert {r["run_id"] for r in result.failed} == {r for r, s in status.items() if s == "failed"}
    assert [s[1:] for s in seen] == [(i, 8) for i in range(1, 9)]  # progress after every run
    diverged = next(r for r in rows if r["run_id"] == "small/diverges-s0")
    assert diverged["stop_reason"] == "diverged" and diverged["epochs_run"] == 1
    study = json.loads((runs_dir / "small" / "study.json").read_text())
    assert study["status"] == "failed" and len(study["runs"]) == 8


def test_index_metrics_match_the_run_files(small_study):
    runs_dir, _, _ = small_study
    for row in index_rows(runs_dir, "small"):
        if row["status"] != "complete":
            continue
        folder = Path(row["run_dir"])
        assert folder == runs_dir / "small" / row["run_id"].split("/")[1]
        epochs = json.loads((folder / "history.json").read_text())["epochs"]
        summary = json.loads((folder / "summary.json").read_text())
        last = epochs[-1]
        assert row["epochs_run"] == len(epochs) == 2 and row["final_epoch"] == 2
        assert row["peak_valid_acc"] == max(e["valid_acc"] for e in epochs)
        assert row["lowest_valid_loss"] == min(e["valid_loss"] for e in epochs)
        assert row["final_gap_acc"] == pytest.approx(last["train_acc"] - last["valid_acc"], abs=1e-12)
        assert row["final_gap_loss"] == pytest.approx(last["valid_loss"] - last["train_loss"], abs=1e-12)
        assert row["params"] == summary["params"] and row["best_epoch"] == summary["best_epoch"]
        assert row["config"]["seed"] == row["seed"] and row["config"]["threads"] == 1
        assert row["seconds"] > 0 and row["started_at"] < row["ended_at"]


def test_table_means_and_stds_over_seeds(small_study):
    runs_dir, result, _ = small_study
    rows = index_rows(runs_dir, "small")
    table = {e["variant"]: e for e in result.table}
    assert list(table) == ["baseline", "l2", "diverges", "bad"]
    for variant in ("baseline", "l2"):
        values = [r["peak_valid_acc"] for r in rows if r["variant"] == variant]
        assert table[variant]["n"] == 2 and table[variant]["failed"] == 0
        assert table[variant]["peak_valid_acc"]["mean"] == pytest.approx(statistics.mean(values), abs=1e-6)
        assert table[variant]["peak_valid_acc"]["std"] == pytest.approx(statistics.stdev(values), abs=1e-6)
    assert table["bad"]["n"] == 0 and table["bad"]["failed"] == 2
    assert table["bad"]["final_gap_acc"] == {"mean": None, "std": None}


def test_study_record_and_report(small_study):
    runs_dir, result, _ = small_study
    with RunIndex(runs_dir / "index.sqlite") as index:
        study = index.study("small")
    assert study["spec"] == FAILING_SPEC.to_dict() and study["seeds"] == [0, 1]
    assert (study["backend"], study["workers"], study["threads"]) == ("serial", 1, 1)
    env = study["environment"]
    import torch

    assert env["torch"] == torch.__version__ and env["device"] in ("cpu", "cuda", "mps")
    assert study["wall_seconds"] > 0
    assert result.report == runs_dir / "small" / "report.html" and result.report.is_file()


def test_resuming_a_finished_study_reruns_nothing(small_study, tmp_path):
    runs_dir, _, _ = small_study
    shutil.copytree(runs_dir / "small", tmp_path / "small")
    with RunIndex(tmp_path / "index.sqlite") as index:
        index.rebuild(tmp_path)
    before = index_rows(tmp_path)
    result = run_study(None, tmp_path, "small", resume=True, report=False)
    after = index_rows(tmp_path)
    complete = [r["run_id"] for r in before if r["status"] == "complete"]
    # Complete runs untouched (same start times); failed ones retried and failing the same way.
    assert [r for r in after if r["run_id"] in complete] == [r for r in before if r["run_id"] in complete]
    assert without_timing(after) == without_timing(before)
    assert result.status == "failed"


def test_study_refuses_to_overwrite_and_resume_checks(small_study, tmp_path):
    runs_dir, _, _ = small_study
    with pytest.raises(OverfitlabError, match="already exists: pass --resume small"):
        run_study(FAILING_SPEC, runs_dir, "small")
    with pytest.raises(OverfitlabError, match="no study 'smal' .*known studies are small"):
        run_study(None, runs_dir, "smal", resume=True)
    with pytest.raises(OverfitlabError, match="started with another spec"):
        run_study(FAILING_SPEC.with_seeds(3), runs_dir, "small", resume=True)
    with pytest.raises(OverfitlabError, match="threads per run"):
        run_study(None, runs_dir, "small", resume=True, threads=2)


# --------------------------------------------------------------------------- stacked seeds
STACKABLE_SPEC = make_spec(
    {**SMALL, "batchnorm": False, "dropout": 0.0},
    [
        ("baseline", {}),
        ("l2", {"l2": 1e-3}),
        ("stopping", {"early_stopping": True, "patience": 1, "epochs": 4}),
        ("augmented", {"augment": True}),  # stacking cannot: run one by one
    ],
    seeds=[0, 1, 2],
)
COMPARED = ("lowest_valid_loss", "peak_valid_acc", "final_train_loss", "final_gap_acc", "epochs_run")


def test_stacked_seeds_give_each_run_its_own_numbers_and_resume(tmp_path):
    seen = []
    stacked = run_study(
        STACKABLE_SPEC,
        tmp_path,
        "stacked",
        backend="local",
        workers=2,
        threads=1,
        stack_seeds=True,
        report=False,
        progress=lambda row, done, total: seen.append((done, total)),
    )
    alone = run_study(STACKABLE_SPEC, tmp_path, "alone", threads=1, report=False)
    assert stacked.status == alone.status == "complete"
    assert seen == [(i, 12) for i in range(1, 13)]
    for ours, theirs in zip(stacked.runs, alone.runs, strict=True):
        assert ours["run_id"].split("/")[1] == theirs["run_id"].split("/")[1]
        for key in COMPARED:
            assert ours[key] == pytest.approx(theirs[key], abs=1e-5), (ours["run_id"], key)
    statuses = {
        r["run_id"].split("/")[1]: json.loads((Path(r["run_dir"]) / "status.json").read_text())
        for r in stacked.runs
    }
    for variant in ("baseline", "l2", "stopping"):
        assert statuses[f"{variant}-s1"]["stacked_with"] == [f"{variant}-s{s}" for s in (0, 1, 2)]
    assert all("stacked_with" not in statuses[f"augmented-s{s}"] for s in (0, 1, 2))
    assert json.loads((tmp_path / "stacked" / "study.json").read_text())["stack_seeds"] is True
    with RunIndex(tmp_path / "index.sqlite") as index:
        assert "vmap" in index.study("stacked")["environment"]["seed stacking"]
        assert "seed stacking" not in index.study("alone")["environment"]

    # One member lost: resuming trains it alone, stacked as before; the others are untouched.
    (tmp_path / "stacked" / "l2-s1" / "status.json").unlink()
    before = index_rows(tmp_path, "stacked")
    resumed = run_study(None, tmp_path, "stacked", resume=True, report=False)
    after = index_rows(tmp_path, "stacked")
    assert [r for r in after if r["run_id"] != "stacked/l2-s1"] == [
        r for r in before if r["run_id"] != "stacked/l2-s1"
    ]
    redone = next(r for r in resumed.runs if r["run_id"] == "stacked/l2-s1")
    original = next(r for r in stacked.runs if r["run_id"] == "stacked/l2-s1")
    assert redone["started_at"] > original["started_at"]
    for key in COMPARED:
        assert redone[key] == pytest.approx(original[key], abs=1e-5), key
    assert json.loads((tmp_path / "stacked" / "l2-s1" / "status.json").read_text())["stacked_with"] == [
        "l2-s1"
    ]
    with pytest.raises(OverfitlabError, match="trains its seeds one by one"):
        run_study(None, tmp_path, "alone", resume=True, stack_seeds=True)


def test_a_stacked_variant_that_fails_fails_each_of_its_runs_and_the_study_goes_on(tmp_path):
    spec = make_spec(
        {**SMALL, "batchnorm": False, "dropout": 0.0},
        [("baseline", {}), ("too-many", {"train_size": 10**6}), ("diverges", {"lr": 1e12})],
        seeds=[0, 1],
    )
    result = run_study(spec, tmp_path, "failing", threads=1, stack_seeds=True, report=False)
    status = {r["run_id"].split("/")[1]: (r["status"], r["error"] or "") for r in result.runs}
    assert status["baseline-s0"] == status["baseline-s1"] == ("complete", "")
    for seed in (0, 1):
        assert status[f"too-many-s{seed}"][0] == "failed" and "1000000" in status[f"too-many-s{seed}"][1]
        assert status[f"diverges-s{seed}"][0] == "failed"
        assert status[f"diverges-s{seed}"][1].startswith("training diverged")
    assert result.status == "failed"


# --------------------------------------------------------------------------- the CLI
def test_cli_study_json_and_exit_status(tmp_path, capsys):
    spec = write(
        tmp_path / "spec.toml",
        """
        seeds = 2
        [base]
        train_size = 120
        epochs = 2
        hidden = 4
        batch_size = 40
        [[variant]]
        name = "baseline"
        [[variant]]
        name = "big-batch"
        batch_size = 500
    """,
    )
    code = main(
        [
            "study",
            str(spec),
            "--runs-dir",
            str(tmp_path / "runs"),
            "--name",
            "cli",
            "--json",
            "--quiet",
            "--backend",
            "serial",
            "--threads",
            "1",
            "--epochs",
            "3",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 1  # some runs failed
    rows = index_rows(tmp_path / "runs", "cli")
    assert all(r["config"]["epochs"] == 3 for r in rows)  # the flag overrides the spec's base
    # Relative paths are made absolute: Ray workers run in another directory.
    plan = RunPlan("x", "baseline", 0, None, None, Config(dataset="mnist", data_dir="some/data"))
    config = plan.with_absolute_data_dir().config
    assert config is not None and config.data_dir == os.path.abspath("some/data")
    assert out["runs"] == 4 and out["complete"] == 2
    assert {f["run_id"] for f in out["failed"]} == {"cli/big-batch-s0", "cli/big-batch-s1"}
    assert all("batch size 500" in f["error"] for f in out["failed"])
    (baseline, _) = out["table"]
    accs = [r["peak_valid_acc"] for r in rows if r["variant"] == "baseline"]
    assert baseline["variant"] == "baseline" and baseline["n"] == 2
    assert baseline["peak_valid_acc"]["mean"] == pytest.approx(statistics.mean(accs), abs=1e-6)
    assert out["report"] == str(tmp_path / "runs" / "cli" / "report.html")


def test_cli_study_without_a_spec_runs_the_remedies_preset_on_the_local_pool(monkeypatch, tmp_path):
    calls = []

    def fake_run_study(spec, runs_dir, name, **kwargs):
        calls.append((spec, runs_dir, name, kwargs))
        raise OverfitlabError("stop here")

    monkeypatch.setattr("overfitlab.cli.study.run_study", fake_run_study)
    assert main(["study", "--runs-dir", str(tmp_path), "--seeds", "2", "--epochs", "7"]) == 2
    ((spec, runs_dir, name, kwargs),) = calls
    assert spec == preset("remedies", seeds=2).with_base({"epochs": 7})
    assert (runs_dir, name, kwargs["backend"], kwargs["resume"]) == (str(tmp_path), None, "local", False)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["study", "--resume", "x", "--preset", "remedies"], "drop SPEC, --preset and --name"),
        (["study", "--resume", "x", "--lr", "0.1"], "drop the recipe flags"),
        (
            ["study", "--preset", "remedies", "--backend", "local", "--workers", "64", "--threads", "64"],
            "oversubscribe",
        ),
        (["study", "--preset", "remedies", "--lr", "-1"], "lr must be > 0"),
        (
            ["study", "--preset", "remedies", "--stack-seeds", "--tensorboard"],
            "drop --stack-seeds or --tensorboard",
        ),
    ],
)
def test_cli_study_errors_are_one_line(tmp_path, capsys, argv, message):
    assert main(argv + ["--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_cli_runs_list_show_compare_rebuild(small_study, capsys, tmp_path):
    runs_dir, _, _ = small_study
    common = ["--runs-dir", str(runs_dir)]
    assert main(["runs", "list", "--study", "small", *common]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:2] == ["run", "status"] and len(out) == 1 + 8
    row = index_rows(runs_dir, "small")[0]
    assert f"{row['peak_valid_acc']:.4f}" in out[1] and out[1].startswith("small/baseline-s0")

    assert main(["runs", "show", "baseline-s1", *common]) == 0  # a folder name is enough when unique
    out = capsys.readouterr().out
    history = json.loads((runs_dir / "small" / "baseline-s1" / "history.json").read_text())["epochs"]
    assert "l2 = 0.0" in out and "small/baseline-s1" in out
    assert f"{history[-1]['valid_loss']:.4f}" in out.split("history")[-1]

    plot = tmp_path / "cmp.png"
    assert main(["runs", "compare", "small/baseline-s0", "small/l2-s0", "--plot", str(plot), *common]) == 0
    out = capsys.readouterr().out
    assert "config.l2" in out and "config.seed" not in out  # only the fields that differ
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert main(["runs", "show", "small/basline-s0", *common]) == 2
    err = capsys.readouterr().err
    assert "did you mean small/baseline-s0" in err and err.count("\n") == 1
    assert main(["runs", "list", "--study", "smal", *common]) == 2
    assert "did you mean small" in capsys.readouterr().err

    before = index_rows(runs_dir)
    assert main(["runs", "rebuild", *common]) == 0
    assert "1 studies, 8 runs" in capsys.readouterr().out
    assert index_rows(runs_dir) == before


# --------------------------------------------------------------------------- processes
KILL_SPEC = """
seeds = 3
[base]
train_size = 300
epochs = 6
hidden = 8
[[variant]]
name = "baseline"
[[variant]]
name = "dropout"
dropout = 0.3
"""


def overfitlab_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "overfitlab", *args]


def quiet_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def descendants_of(pid: int) -> list[int]:
    """Every process below ``pid``: the pool's workers are children of its fork server."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
    found, frontier = [], [pid]
    while frontier:
        below = [child for child, parent in parents.items() if parent in frontier]
        found += below
        frontier = below
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SIGKILL of a process tree, via /proc")
def test_a_study_killed_with_sigkill_resumes_to_the_uninterrupted_result(tmp_path):
    spec_path = write(tmp_path / "spec.toml", KILL_SPEC)
    killed_dir, reference_dir = tmp_path / "killed", tmp_path / "reference"
    proc = subprocess.Popen(
        overfitlab_cmd(
            "study",
            str(spec_path),
            "--runs-dir",
            str(killed_dir),
            "--name",
            "k",
            "--backend",
            "local",
            "--workers",
            "2",
            "--threads",
            "1",
            "--quiet",
        ),
        env=quiet_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    workers = []
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if (killed_dir / "index.sqlite").is_file():
                rows = index_rows(killed_dir, "k")
                if any(r["status"] == "complete" for r in rows):
                    break
            assert proc.poll() is None, "the study ended before it could be killed"
            time.sleep(0.05)
        workers = descendants_of(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    # The pool's workers die with the study: nothing keeps writing into its folders.
    deadline = time.monotonic() + 30
    while any(alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(workers) >= 2 and not any(alive(w) for w in workers)
    interrupted = index_rows(killed_dir, "k")
    assert 1 <= sum(r["status"] == "complete" for r in interrupted) < 6, "not killed mid-way"

    resumed = run_study(None, killed_dir, "k", resume=True, report=False)
    reference = run_study(load_spec(spec_path), reference_dir, "k", threads=1, report=False)
    assert resumed.status == reference.status == "complete"
    assert without_timing(index_rows(killed_dir)) == without_timing(index_rows(reference_dir))
    # Nothing duplicated: exactly the planned run folders, each complete.
    folders = sorted(p.name for p in (killed_dir / "k").iterdir() if p.is_dir())
    assert folders == sorted(p.name for p in (reference_dir / "k").iterdir() if p.is_dir())
    assert len(folders) == 6
    for name in folders:
        a = json.loads((killed_dir / "k" / name / "history.json").read_text())["epochs"]
        b = json.loads((reference_dir / "k" / name / "history.json").read_text())["epochs"]
        assert [e["valid_loss"] for e in a] == [e["valid_loss"] for e in b]
    done_before = {r["run_id"]: r["started_at"] for r in interrupted if r["status"] == "complete"}
    after = {r["run_id"]: r["started_at"] for r in index_rows(killed_dir)}
    assert all(after[run] == started for run, started in done_before.items())  # not redone


def test_two_studies_writing_one_index_at_once_lose_nothing(tmp_path):
    spec_path = write(
        tmp_path / "spec.toml",
        """
        seeds = 2
        [base]
        train_size = 120
        epochs = 2
        hidden = 4
        batch_size = 40
        [[variant]]
        name = "baseline"
        [[variant]]
        name = "l1"
        l1 = 1e-4
    """,
    )
    runs_dir = tmp_path / "runs"
    procs = [
        subprocess.Popen(
            overfitlab_cmd(
                "study",
                str(spec_path),
                "--runs-dir",
                str(runs_dir),
                "--name",
                name,
                "--backend",
                "serial",
                "--threads",
                "1",
                "--quiet",
                "--json",
            ),
            env=quiet_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b")
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    rows = index_rows(runs_dir)
    assert len(rows) == 8 and all(r["status"] == "complete" for r in rows)
    with RunIndex(runs_dir / "index.sqlite") as index:
        assert {s["name"]: s["status"] for s in index.studies()} == {"a": "complete", "b": "complete"}
    a = without_timing(index_rows(runs_dir, "a"))
    b = without_timing(index_rows(runs_dir, "b"))
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("run_id", "study")} for r in rows]  # noqa: E731
    assert strip(a) == strip(b)  # the same recipe and seeds, the same numbers
    assert all(json.loads(out)["complete"] == 4 for out, _ in outputs)


# --------------------------------------------------------------------------- TensorBoard
def test_tensorboard_logs_hold_the_history(tmp_path):
    pytest.importorskip(
        "tensorboard", reason="tensorboard is not installed (pip install 'overfitlab[tensorboard]')"
    )
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    spec = make_spec(SMALL, [("baseline", {})], seeds=1)
    run_study(spec, tmp_path, "tb", threads=1, tensorboard=True, report=False)
    run_dir = tmp_path / "tb" / "baseline-s0"
    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    history = json.loads((run_dir / "history.json").read_text())["epochs"]
    for tag, column in (("loss/valid", "valid_loss"), ("accuracy/train", "train_acc")):
        scalars = events.Scalars(tag)
        assert [s.step for s in scalars] == [e["epoch"] for e in history]
        assert [s.value for s in scalars] == pytest.approx([e[column] for e in history], rel=1e-6)


def test_tensorboard_missing_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(OverfitlabError, match=r"pip install 'overfitlab\[tensorboard\]'"):
        run_study(make_spec(SMALL, [("baseline", {})], seeds=1), tmp_path, "x", tensorboard=True)
    assert not (tmp_path / "x").exists()  # refused before anything was written


def test_ctrl_c_in_a_serial_study_interrupts_it_and_fails_no_run(tmp_path, monkeypatch):
    """Ctrl-C inside a run reaches the study as the interruption it is (not as that run's
    error): the study says how to resume, and a resume finishes what was left."""
    from overfitlab.errors import Interrupted
    from overfitlab.training.trainer import Trainer

    spec = make_spec(SMALL, [("baseline", {}), ("l2", {"l2": 1e-3})], seeds=[0])
    epochs = []
    original = Trainer.train_epoch

    def ctrl_c_in_the_second_run(self, split):
        epochs.append(self)
        if len({id(t) for t in epochs}) == 2:
            raise KeyboardInterrupt
        return original(self, split)

    monkeypatch.setattr(Trainer, "train_epoch", ctrl_c_in_the_second_run)
    with pytest.raises(Interrupted, match="overfitlab study --resume cut"):
        run_study(spec, tmp_path, "cut", backend="serial", threads=1, report=False)
    status = {r["run_id"]: r["status"] for r in index_rows(tmp_path, "cut")}
    assert status["cut/baseline-s0"] == "complete"
    assert status["cut/l2-s0"] not in ("complete", "failed")
    assert json.loads((tmp_path / "cut" / "study.json").read_text())["status"] == "interrupted"
    monkeypatch.setattr(Trainer, "train_epoch", original)
    result = run_study(None, tmp_path, "cut", resume=True, backend="serial", report=False)
    assert result.status == "complete"
