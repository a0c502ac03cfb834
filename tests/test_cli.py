"""The command line, run as users run it: ``python -m overfitlab`` in a fresh folder, one thread."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import MNIST_RAW, SHARED_DATA, cli_command, cli_env, run_overfitlab

TIMINGS = {"train_seconds", "valid_seconds", "epoch_seconds"}
SUMMARY_KEYS = {
    "class_names",
    "model",
    "model_notes",
    "best",
    "last",
    "final",
    "final_epoch",
    "final_train_acc",
    "final_valid_acc",
    "final_train_loss",
    "final_valid_loss",
    "final_gap_acc",
    "final_gap_loss",
    "peak_valid_acc",
    "lowest_valid_loss",
    "dataset",
    "train_images",
    "valid_images",
    "input_shape",
    "classes",
    "best_epoch",
    "stopped_epoch",
    "epochs_run",
    "stop_reason",
    "stop_message",
    "train_seconds",
    "params",
    "run_dir",
}
METRIC_KEYS = {"train_loss", "train_acc", "valid_loss", "valid_acc"}
# seed-cnn on 8×8 digits, by hand: conv 1→8 (80) + BN (16) + conv 8→16 (1,168) + BN (32)
# + linear 16·2·2→100 (6,500) + linear 100→10 (1,010).
DIGITS_SEED_CNN_PARAMS = 80 + 16 + 1_168 + 32 + (64 * 100 + 100) + (100 * 10 + 10)


# ---------------------------------------------------------------- every bad input: one line, exit 2
def setup_corrupt_mnist(cwd: Path) -> None:
    raw = cwd / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in MNIST_RAW:
        source = (SHARED_DATA / "MNIST" / "raw" / name).read_bytes()
        (raw / name).write_bytes(source[:500_000] if name.startswith("train-images") else source)


def setup_file(name: str, text: str):
    return lambda cwd: (cwd / name).write_text(text)


BAD_INPUTS = {
    # id: (arguments, text stderr must hold, setup)
    "wrong-data-dir": (
        ["train", "--dataset", "mnist", "--data-dir", "nowhere", "--no-download"],
        "mnist not found under nowhere/MNIST/raw",
        None,
    ),
    "corrupt-idx": (
        ["train", "--dataset", "mnist", "--data-dir", "data"],
        "are corrupt or truncated",
        setup_corrupt_mnist,
    ),
    "unknown-dataset": (
        ["train", "--dataset", "imagenet"],
        "unknown dataset 'imagenet': choose one of",
        None,
    ),
    "unknown-model": (["train", "--model", "resnet"], "unknown model 'resnet': choose one of", None),
    "unknown-optimizer": (["train", "--optimizer", "rmsprop"], "unknown optimizer 'rmsprop'", None),
    "dropout-1": (["train", "--dropout", "1.0"], "dropout must be in [0, 1)", None),
    "lr-0": (["train", "--lr", "0"], "lr must be > 0", None),
    "lr-negative": (["train", "--lr", "-1"], "lr must be > 0, got -1.0", None),
    "patience-negative": (["train", "--patience", "-1"], "patience must be ≥ 0", None),
    "train-size-too-big": (["train", "--train-size", "100000"], "pass at most 1347", None),
    "malformed-toml": (
        ["train", "--config", "bad.toml"],
        "bad.toml is not valid TOML",
        setup_file("bad.toml", "[optim]\nlr = = 0.1\n"),
    ),
    "unknown-toml-key": (
        ["train", "--config", "typo.toml"],
        "unknown key 'dropuot' in typo.toml: did you mean dropout",
        setup_file("typo.toml", "dropuot = 0.5\n"),
    ),
    "unknown-flag": (["train", "--dropuot", "0.5"], "(did you mean --dropout?)", None),
    "not-a-number": (["train", "--lr", "fast"], "invalid float value: 'fast'", None),
    "diverged": (
        [
            "train",
            "--model",
            "seed-fc",
            "--optimizer",
            "sgd",
            "--lr",
            "1e6",
            "--train-size",
            "96",
            "--epochs",
            "2",
        ],
        "training diverged: train loss is nan at epoch 1",
        None,
    ),
    "resume-missing": (["train", "--resume", "runs/nothing"], "run folder runs/nothing not found", None),
    # The same kinds of fault found beyond the reported ones: a file where a folder belongs.
    "resume-a-file": (
        ["train", "--resume", "afile"],
        "afile is a file, not a run folder",
        setup_file("afile", ""),
    ),
    "data-dir-a-file": (
        ["train", "--dataset", "mnist", "--data-dir", "afile"],
        "--data-dir afile is a file, not a folder",
        setup_file("afile", ""),
    ),
    "name-a-file": (
        ["train", "--name", "afile", "--runs-dir", "."],
        "afile is a file, not a run folder",
        setup_file("afile", ""),
    ),
    "bad-address": (
        ["study", "--backend", "ray", "--address", "nohost"],
        "bad --address 'nohost': give the head node as HOST:PORT",
        None,
    ),
    "summary-unknown-model": (["summary", "resnet"], "unknown model 'resnet'", None),
    "summary-bad-input": (["summary", "seed-cnn", "--input", "28,28"], "bad --input '28,28'", None),
}
SUMMARIES = {
    "seed-cnn": (["summary", "seed-cnn", "--hidden", "8"], ["Total params: 80,806"]),
    "seed-fc": (["summary", "seed-fc"], ["Total params: 80,758"]),
    "seed-gap": (["summary", "seed-gap"], ["Total params: 3,958"]),
    "compare": (["summary", "seed-fc", "--compare", "fc,gap"], ["80,758", "3,958"]),
}


@pytest.fixture(scope="module")
def quick_runs(tmp_path_factory):
    """All the short commands at once (each mostly imports torch): id -> CompletedProcess."""
    jobs = {}
    for key, (args, _, setup) in BAD_INPUTS.items():
        if setup is setup_corrupt_mnist and not (SHARED_DATA / "MNIST" / "raw").is_dir():
            continue
        cwd = tmp_path_factory.mktemp(key)
        if setup:
            setup(cwd)
        jobs[key] = (cwd, args)
    for key, (args, _) in SUMMARIES.items():
        jobs[f"summary-{key}"] = (tmp_path_factory.mktemp(key), args)
    jobs["debug"] = (tmp_path_factory.mktemp("debug"), ["--debug", "train", "--lr", "0"])
    with ThreadPoolExecutor(max_workers=2) as pool:  # the machine has 2 cores
        futures = {key: pool.submit(run_overfitlab, cwd, *args) for key, (cwd, args) in jobs.items()}
        return {key: future.result() for key, future in futures.items()}


@pytest.mark.parametrize("key", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_and_exit_2(quick_runs, key):
    if key not in quick_runs:
        pytest.skip(f"real MNIST not found under {SHARED_DATA}")
    result = quick_runs[key]
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert BAD_INPUTS[key][1] in lines[0]
    assert lines[0].startswith("overfitlab")
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_debug_shows_the_traceback(quick_runs):
    result = quick_runs["debug"]
    assert result.returncode != 0
    assert "Traceback (most recent call last)" in result.stderr
    assert "OverfitlabError: lr must be > 0" in result.stderr


@pytest.mark.parametrize("key", sorted(SUMMARIES))
def test_summary_prints_the_tutorial_counts(quick_runs, key):
    result = quick_runs[f"summary-{key}"]
    assert result.returncode == 0, result.stderr
    for text in SUMMARIES[key][1]:
        assert text in result.stdout


# ---------------------------------------------------------------- train --json
def test_train_json_prints_the_documented_summary(tmp_path, run_cli):
    flags = ["--train-size", "96", "--epochs", "3", "--seed", "2"]
    result = run_cli("train", "--json", "--name", "first", *flags)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    summary = json.loads(lines[0])
    assert set(summary) == SUMMARY_KEYS
    assert set(summary["best"]) == METRIC_KEYS and set(summary["last"]) == METRIC_KEYS
    run_dir = tmp_path / summary["run_dir"]
    assert run_dir == tmp_path / "runs" / "first"
    # Every number checked against the run folder's own history.
    epochs = json.loads((run_dir / "history.json").read_text())["epochs"]
    best = min(epochs, key=lambda r: r["valid_loss"])
    assert summary["best_epoch"] == best["epoch"]
    assert summary["best"] == {k: best[k] for k in METRIC_KEYS}
    assert summary["last"] == {k: epochs[-1][k] for k in METRIC_KEYS}
    assert (summary["epochs_run"], summary["stopped_epoch"], summary["stop_reason"]) == (3, None, "completed")
    assert summary["params"] == DIGITS_SEED_CNN_PARAMS == 8_806
    assert summary["train_seconds"] == pytest.approx(sum(r["epoch_seconds"] for r in epochs), abs=1e-3)
    assert json.loads((run_dir / "summary.json").read_text()) == summary
    assert {p.name for p in run_dir.iterdir()} == {
        "config.toml",
        "history.csv",
        "history.json",
        "best.pt",
        "last.pt",
        "summary.json",
        "summary.txt",
        "curves.png",
    }
    # The same name again is refused, in one line, and the first run is untouched.
    again = run_cli("train", "--name", "first", *flags)
    assert again.returncode == 2
    assert again.stderr.strip().splitlines() == [
        "overfitlab: error: run folder runs/first already exists: pass another --name, "
        "or --resume runs/first to continue it"
    ]
    assert json.loads((run_dir / "summary.json").read_text()) == summary


# ---------------------------------------------------------------- Ctrl-C, then --resume
FLAGS = ["--train-size", "400", "--epochs", "25", "--dropout", "0.2", "--augment", "--seed", "3", "--quiet"]


def index_row(runs_dir: Path, run_id: str) -> dict:
    from overfitlab.studies.index import RunIndex

    with RunIndex(runs_dir / "index.sqlite") as index:
        return index.run(run_id)


def test_train_runs_are_in_the_index_as_their_folders_say(run_cli, tmp_path):
    flags = ["--train-size", "200", "--epochs", "4", "--hidden", "4", "--threads", "1", "--quiet"]
    for name in ("one", "two"):
        assert run_cli("train", "--name", name, "--seed", str(len(name)), *flags).returncode == 0
    listed = run_cli("runs", "list")
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[0] for line in listed.stdout.splitlines()[1:]] == ["one", "two"]
    row = index_row(tmp_path / "runs", "one")
    epochs = json.loads((tmp_path / "runs" / "one" / "history.json").read_text())["epochs"]
    last = epochs[-1]
    assert row["status"] == "complete" and row["study"] == "(train)" and row["seed"] == 3
    assert row["peak_valid_acc"] == max(e["valid_acc"] for e in epochs)
    assert row["final_gap_acc"] == pytest.approx(last["train_acc"] - last["valid_acc"])
    before = [index_row(tmp_path / "runs", n) for n in ("one", "two")]
    (tmp_path / "runs" / "index.sqlite").unlink()
    assert run_cli("runs", "rebuild").returncode == 0
    assert [index_row(tmp_path / "runs", n) for n in ("one", "two")] == before


def metric_columns(run_dir: Path):
    history = json.loads((run_dir / "history.json").read_text())
    return [{k: v for k, v in r.items() if k not in TIMINGS} for r in history["epochs"]], history["batches"]


def test_sigint_then_resume_matches_an_uninterrupted_run(tmp_path, run_cli):
    # Ctrl-C as a terminal sends it, even where the tests run in the background (a
    # non-interactive shell starts background jobs with SIGINT ignored, and children inherit that).
    process = subprocess.Popen(
        cli_command("train", "--name", "cut", *FLAGS),
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    history = tmp_path / "runs" / "cut" / "history.json"
    deadline = time.monotonic() + 120
    while not history.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert process.poll() is None, f"finished before the first epoch was written: {process.stderr.read()}"
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr
    assert lines[0].startswith("overfitlab: interrupted after epoch ")
    assert lines[0].endswith("resume with `overfitlab train --resume runs/cut`")
    stopped_at = len(json.loads(history.read_text())["epochs"])
    assert 1 <= stopped_at < 25
    assert (
        json.loads((tmp_path / "runs" / "cut" / "summary.json").read_text())["stop_reason"] == "interrupted"
    )
    row = index_row(tmp_path / "runs", "cut")
    assert row["status"] == "interrupted" and row["error"].startswith("interrupted: after epoch")
    assert row["epochs_run"] == stopped_at

    resumed = run_cli("train", "--resume", "runs/cut", "--json")
    assert resumed.returncode == 0, resumed.stderr
    row = index_row(tmp_path / "runs", "cut")
    assert row["status"] == "complete" and row["error"] is None and row["epochs_run"] == 25
    whole = run_cli("train", "--name", "whole", "--json", *FLAGS)
    assert whole.returncode == 0, whole.stderr
    assert metric_columns(tmp_path / "runs" / "cut") == metric_columns(tmp_path / "runs" / "whole")
    ours, theirs = json.loads(resumed.stdout), json.loads(whole.stdout)
    for key in ("best", "last", "best_epoch", "epochs_run", "stop_reason", "params"):
        assert ours[key] == theirs[key], key
    assert ours["epochs_run"] == 25


def test_the_command_line_and_the_package_start_without_torch():
    """--help, bad flags and a study's worker server do not wait for torch's import;
    every public name still resolves, to the object its module defines."""
    import sys

    code = (
        "import sys, overfitlab, overfitlab.cli as cli\n"
        "cli.build_parser()\n"
        "assert 'torch' not in sys.modules, 'torch imported at start-up'\n"
        "import importlib\n"
        "for name in overfitlab.__all__:\n"
        "    module = importlib.import_module('overfitlab.' + overfitlab._EXPORTS[name])\n"
        "    assert getattr(overfitlab, name) is getattr(module, name), name\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=cli_env(), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
    help_text = subprocess.run(
        cli_command("--help"), env=cli_env(), capture_output=True, text=True, timeout=60
    )
    assert help_text.returncode == 0 and "study" in help_text.stdout
