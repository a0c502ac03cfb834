"""What a newcomer tried and what broke: each test fails on the code before its fix.

Runs of the command line go through ``run_cli`` (a fresh folder, one thread); the rest
calls the library in this process with one thread.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sqlite3
import subprocess
import time
from importlib import metadata
from pathlib import Path

import pytest
import torch

TINY = ["--train-size", "120", "--epochs", "3", "--hidden", "4", "--threads", "1", "--quiet"]


def one_line_error(result: subprocess.CompletedProcess, text: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert text in lines[0], lines[0]


def new_entries(before: set[Path], folder: Path) -> set[Path]:
    return set(folder.iterdir()) - before


# ---------------------------------------------------------------- runs show / compare / index
@pytest.fixture(scope="module")
def mixed_runs(tmp_path_factory):
    """A runs folder holding two `train` runs and a small study (ids 'plain', 'stopped',
    'mini/baseline-s0', ...), as README's flow leaves it."""
    from conftest import run_overfitlab

    cwd = tmp_path_factory.mktemp("mixed")
    assert run_overfitlab(cwd, "train", "--name", "plain", *TINY).returncode == 0
    stopped = run_overfitlab(
        cwd,
        "train",
        "--name",
        "stopped",
        "--early-stopping",
        "--patience",
        "2",
        "--train-size",
        "120",
        "--epochs",
        "25",
        "--hidden",
        "4",
        "--threads",
        "1",
        "--quiet",
    )
    assert stopped.returncode == 0, stopped.stderr
    spec = cwd / "mini.toml"
    spec.write_text(
        'name = "mini"\nseeds = [0, 1]\n[base]\ntrain_size = 120\nepochs = 3\nhidden = 4\n'
        '[[variant]]\nname = "baseline"\n[[variant]]\nname = "l2"\nl2 = 0.001\n'
    )
    study = run_overfitlab(cwd, "study", str(spec), "--name", "mini", "--backend", "serial", "--quiet")
    assert study.returncode == 0, study.stderr
    return cwd


@pytest.mark.parametrize(
    "name", ["plain", "runs/plain", "RUNS/plain", "mini/baseline-s0", "baseline-s0", "runs/mini/l2-s1"]
)
def test_runs_show_finds_train_and_study_runs_by_id_name_or_path(mixed_runs, run_cli, name):
    if name.startswith("RUNS/"):
        name = str(mixed_runs / "runs" / name.split("/", 1)[1])  # an absolute path
    result = run_cli("runs", "show", name, "--json", cwd=mixed_runs)
    assert result.returncode == 0, result.stderr
    row = json.loads(result.stdout)
    assert Path(row["run_dir"]).name == Path(name).name


def test_an_unknown_run_is_one_line_with_close_matches(mixed_runs, run_cli):
    one_line_error(run_cli("runs", "show", "plian", cwd=mixed_runs), "did you mean plain")
    one_line_error(run_cli("runs", "compare", "plain", "nothing-like-it", cwd=mixed_runs), "no run")


def test_runs_compare_takes_train_runs_and_study_runs(mixed_runs, run_cli):
    result = run_cli("runs", "compare", "plain", "runs/stopped", "baseline-s1", "--json", cwd=mixed_runs)
    assert result.returncode == 0, result.stderr
    ids = [r["run_id"] for r in json.loads(result.stdout)["runs"]]
    assert ids == ["plain", "stopped", "mini/baseline-s1"]


def test_an_unwritable_output_file_is_one_line(mixed_runs, run_cli):
    result = run_cli("runs", "compare", "plain", "stopped", "--plot", "/proc/x.png", cwd=mixed_runs)
    one_line_error(result, "cannot write /proc/x.png")
    result = run_cli("report", "mini", "--out", "/proc/report.html", cwd=mixed_runs)
    one_line_error(result, "/proc")


def test_one_name_one_number_in_every_output(mixed_runs, run_cli):
    """summary.txt, summary.json, runs list and runs compare say the same number under the
    same name, for an early-stopped run whose returned epoch is not its last."""
    from overfitlab.metrics import LABELS

    run_dir = mixed_runs / "runs" / "stopped"
    summary = json.loads((run_dir / "summary.json").read_text())
    epochs = json.loads((run_dir / "history.json").read_text())["epochs"]
    assert summary["stop_reason"] == "patience" and summary["final_epoch"] == summary["best_epoch"]
    assert summary["final_epoch"] < epochs[-1]["epoch"]  # restored: not the last epoch
    final = next(e for e in epochs if e["epoch"] == summary["final_epoch"])
    # Independent of overfitlab.metrics: computed here from the history.
    expected = {
        "final_gap_acc": final["train_acc"] - final["valid_acc"],
        "final_valid_acc": final["valid_acc"],
        "peak_valid_acc": max(e["valid_acc"] for e in epochs),
        "lowest_valid_loss": min(e["valid_loss"] for e in epochs),
    }
    for key, value in expected.items():
        assert summary[key] == pytest.approx(value, abs=1e-12), key
    text = (run_dir / "summary.txt").read_text()
    for key, value in expected.items():
        assert f"{LABELS[key]}" in text
        line = next(line for line in text.splitlines() if line.startswith(LABELS[key]))
        assert line.split()[-1] == f"{value:.4f}", line
    row = json.loads(run_cli("runs", "show", "stopped", "--json", cwd=mixed_runs).stdout)
    for key, value in expected.items():
        assert row[key] == pytest.approx(value, abs=1e-12), key
    listing = run_cli("runs", "list", cwd=mixed_runs).stdout.splitlines()
    head = listing[0]
    assert "final gap" in head and "peak valid acc" in head and "best valid" not in head
    stopped_line = next(line for line in listing if line.startswith("stopped "))
    assert f"{expected['final_gap_acc']:.4f}" in stopped_line
    compared = run_cli("runs", "compare", "stopped", "plain", cwd=mixed_runs).stdout
    gap_line = next(line for line in compared.splitlines() if line.startswith("final_gap_acc"))
    assert gap_line.split()[1] == f"{expected['final_gap_acc']:.4f}"


def test_summary_names_the_data_set_and_the_input_shape(mixed_runs):
    summary = json.loads((mixed_runs / "runs" / "plain" / "summary.json").read_text())
    assert (summary["dataset"], summary["train_images"], summary["valid_images"]) == ("digits", 120, 450)
    assert summary["input_shape"] == [1, 8, 8] and summary["classes"] == 10
    text = (mixed_runs / "runs" / "plain" / "summary.txt").read_text()
    assert "digits: 120 training and 450 validation images of 1×8×8, 10 classes" in text
    assert f"{summary['params']:,} (for 1×8×8 inputs)" in text


def test_summary_takes_a_data_sets_shape(run_cli):
    digits = run_cli("summary", "seed-cnn", "--hidden", "8", "--dataset", "digits")
    assert digits.returncode == 0, digits.stderr
    assert "Total params: 8,806" in digits.stdout and "on 1×8×8 inputs" in digits.stdout
    mnist = run_cli("summary", "seed-cnn", "--hidden", "8")
    assert "Total params: 80,806" in mnist.stdout and "on 1×28×28 inputs" in mnist.stdout


def test_report_takes_the_study_folder_it_printed(mixed_runs, run_cli):
    result = run_cli("report", "runs/mini", "--out", "again.html", cwd=mixed_runs)
    assert result.returncode == 0, result.stderr
    assert (mixed_runs / "again.html").stat().st_size > 1000
    one_line_error(run_cli("report", "runs/nothing", cwd=mixed_runs), "is not a study folder")


# ---------------------------------------------------------------- a corrupt or unwritable index
def test_a_corrupt_index_is_refused_before_training_and_rebuilt_aside(tmp_path, run_cli):
    assert run_cli("train", "--name", "first", *TINY).returncode == 0
    index = tmp_path / "runs" / "index.sqlite"
    index.write_bytes(b"this is not a database" * 100)
    before = set((tmp_path / "runs").iterdir())
    result = run_cli("train", "--name", "second", *TINY)
    one_line_error(result, "is corrupt")
    assert "overfitlab runs rebuild" in result.stderr
    assert set((tmp_path / "runs").iterdir()) == before  # nothing trained, no folder made
    rebuilt = run_cli("runs", "rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr
    kept = [p for p in (tmp_path / "runs").iterdir() if p.name.startswith("index.sqlite.corrupt-")]
    assert len(kept) == 1 and kept[0].read_bytes() == b"this is not a database" * 100
    assert "rebuilt" in rebuilt.stdout and "1 runs" in rebuilt.stdout
    listed = run_cli("runs", "list")
    assert listed.stdout.splitlines()[1].split()[:2] == ["first", "complete"]


def test_an_index_that_breaks_after_training_still_gives_the_summary(tmp_path, monkeypatch, capsys):
    """The run is trained and saved: the index failing afterwards is a warning, exit 0."""
    from overfitlab import cli
    from overfitlab.errors import OverfitlabError
    from overfitlab.studies import index

    def broken(self, record):
        raise OverfitlabError("database disk image is malformed")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(index.RunIndex, "upsert_run", broken)
    status = cli.main(["train", "--name", "kept", *TINY])
    out, err = capsys.readouterr()
    assert status == 0
    assert "final valid acc" in out and "run folder" in out
    assert "warning: the run is saved, but the run index could not be updated" in err
    assert (tmp_path / "runs" / "kept" / "summary.json").is_file()


def read_only_mount_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o ro tmpfs /mnt && ! touch /mnt/x 2>/dev/null"],
        capture_output=True,
    )
    return probe.returncode == 0


def run_on_read_only(tmp_path: Path, folder: Path, *args: str) -> subprocess.CompletedProcess:
    """``overfitlab ARGS`` with ``folder`` remounted read-only in a private mount namespace
    (what a read-only file system does: EROFS even for root)."""
    from conftest import cli_command, cli_env

    command = shlex.join(cli_command(*args))
    script = f"mount --bind {shlex.quote(str(folder))} {shlex.quote(str(folder))} && "
    script += f"mount -o remount,bind,ro {shlex.quote(str(folder))} && exec {command}"
    return subprocess.run(
        ["unshare", "-rm", "sh", "-c", script],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.mark.skipif(not read_only_mount_works(), reason="no unprivileged read-only mounts here (unshare -rm)")
def test_a_read_only_runs_folder_is_one_line_that_says_so(tmp_path, run_cli):
    assert run_cli("train", "--name", "first", *TINY).returncode == 0
    runs = tmp_path / "runs"
    for args in (
        ("runs", "rebuild"),
        ("train", "--name", "second", *TINY),
        ("study", "--preset", "remedies", "--seeds", "1", "--epochs", "1"),
    ):
        result = run_on_read_only(tmp_path, runs, *args)
        one_line_error(result, "not writable")
        assert "delete it" not in result.stderr


def test_a_runs_dir_that_is_a_file_is_one_line_that_says_so(tmp_path, run_cli):
    (tmp_path / "afile").write_text("")
    for command in ("train", "study"):
        result = run_cli(command, "--runs-dir", "afile", "--epochs", "1")
        one_line_error(result, "afile is a file, not a folder")
        assert "File exists" not in result.stderr


# ---------------------------------------------------------------- silent surprises
def test_data_dir_without_a_data_set_that_reads_it_is_refused(run_cli, tmp_path):
    (tmp_path / "my_images").mkdir()
    one_line_error(run_cli("train", "--data-dir", "my_images"), "pass --dataset too")
    assert not (tmp_path / "runs").exists()


def test_resume_refuses_recipe_flags_and_leaves_the_run_alone(run_cli, tmp_path):
    assert run_cli("train", "--name", "r", *TINY).returncode == 0
    config = (tmp_path / "runs" / "r" / "config.toml").read_text()
    one_line_error(run_cli("train", "--resume", "runs/r", "--dropout", "0.5"), "drop --dropout")
    assert (tmp_path / "runs" / "r" / "config.toml").read_text() == config
    longer = run_cli("train", "--resume", "runs/r", "--epochs", "4", "--quiet", "--json")
    assert longer.returncode == 0, longer.stderr
    assert json.loads(longer.stdout)["epochs_run"] == 4


def test_early_stopping_restores_the_best_weights_as_a_trainer_callback(digits):
    """Used from Python, without run.train: the model fit leaves is the best epoch's."""
    from overfitlab import Callback, EarlyStopping, Trainer
    from overfitlab.data.batches import prepare
    from overfitlab.models.factory import create_model

    class Snapshots(Callback):
        def __init__(self):
            self.states = {}

        def on_epoch_end(self, trainer, epoch, metrics):
            self.states[epoch] = {k: v.clone() for k, v in trainer.model.state_dict().items()}

    torch.manual_seed(0)
    data = prepare(digits, 200, 0.0, 0)
    model = create_model("seed-fc", data.image_shape, data.classes, batchnorm=False, dropout=0.0)
    stopper = EarlyStopping(monitor="valid_loss", patience=3, restore_best=True)
    snapshots = Snapshots()
    trainer = Trainer(model, torch.optim.Adam(model.parameters(), lr=0.01), callbacks=[stopper, snapshots])
    history = trainer.fit(data, 40)
    losses = history.column("valid_loss")
    best = losses.index(min(losses)) + 1
    assert stopper.best_epoch == best < len(history)  # stopped after the best epoch
    best_state = snapshots.states[best]
    assert all(torch.equal(v, best_state[k]) for k, v in model.state_dict().items())
    # The model really is the best epoch's: its validation loss is the best one.
    assert trainer.evaluate(data.valid)[0] == pytest.approx(min(losses), abs=1e-6)


def test_early_stopping_refuses_a_monitor_the_trainer_never_records(digits):
    from overfitlab import EarlyStopping, Trainer
    from overfitlab.errors import OverfitlabError
    from overfitlab.models.factory import create_model

    model = create_model("seed-gap", digits.image_shape, digits.classes)
    trainer = Trainer(
        model, torch.optim.Adam(model.parameters()), callbacks=[EarlyStopping(monitor="valid_los")]
    )
    with pytest.raises(OverfitlabError, match="did you mean valid_loss"):
        trainer.fit(digits, 1)
    assert trainer.epoch == 0  # refused before training


def test_a_monitor_typo_fails_before_training_and_leaves_no_folder(run_cli, tmp_path):
    result = run_cli("train", "--early-stopping", "--monitor", "valid_los", "--name", "x", *TINY)
    one_line_error(result, "unknown monitor 'valid_los': did you mean valid_loss")
    assert "strict=False" not in result.stderr
    assert not (tmp_path / "runs").exists()
    again = run_cli("train", "--early-stopping", "--name", "x", *TINY)  # the same name is free
    assert again.returncode == 0, again.stderr


def test_a_failed_download_leaves_no_folder_behind(run_cli, tmp_path):
    result = run_cli("train", "--dataset", "mnist", "--data-dir", "nowhere/data", "--epochs", "1")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_ray_with_nothing_listening_is_one_line_within_the_timeout(run_cli, tmp_path):
    pytest.importorskip("ray")
    started = time.monotonic()
    result = run_cli(
        "study", "--backend", "ray", "--address", "127.0.0.1:1", "--connect-timeout", "2", "--epochs", "1"
    )
    assert time.monotonic() - started < 60
    one_line_error(result, "no Ray cluster answers at 127.0.0.1:1 within 2 s")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


# ---------------------------------------------------------------- statuses and messages
def test_an_interrupted_train_run_is_interrupted_not_failed(tmp_path):
    from overfitlab.studies.index import single_run_record

    run_dir = tmp_path / "cut"
    run_dir.mkdir()
    (run_dir / "summary.json").write_text(
        json.dumps({"stop_reason": "interrupted", "stop_message": "after epoch 8", "best_epoch": None})
    )
    assert single_run_record(run_dir)["status"] == "interrupted"
    (run_dir / "summary.json").write_text(
        json.dumps({"stop_reason": "diverged", "stop_message": "nan", "best_epoch": None})
    )
    assert single_run_record(run_dir)["status"] == "failed"


def test_the_resume_hint_is_quoted_for_a_shell(tmp_path):
    from overfitlab.runs.train import interrupted_message

    run_dir = tmp_path / "my runs" / "it's here"
    message = interrupted_message(8, run_dir)
    assert message.startswith("after epoch 8: resume with `")
    command = message.split("`")[1]
    assert shlex.split(command) == ["overfitlab", "train", "--resume", str(run_dir)]
    assert "nothing was saved" in interrupted_message(0, run_dir)


def test_wording_of_endings_and_names():
    from overfitlab import Config
    from overfitlab.runs.train import finished
    from overfitlab.store import check_name

    assert finished(None, Config(epochs=1)) == ("completed", "1 epoch")
    assert finished(None, Config(epochs=3)) == ("completed", "3 epochs")
    for name in ("plain-ü", "über_1", "试验.2"):
        assert check_name(name) == name
    from overfitlab.errors import OverfitlabError

    for bad in ("a b", "a/b", "-x", ".hidden", "a$b"):
        with pytest.raises(OverfitlabError, match="letters, digits, '.', '_' and '-' only"):
            check_name(bad)


@pytest.mark.parametrize(
    "toml, message",
    [
        (
            "[regularisation]\nl2 = 0.1\n",
            "unknown section [regularisation] in x.toml: did you mean regularization?",
        ),
        ("[model]\ndropuot = 0.5\n", "unknown key 'dropuot' in [model] of x.toml: did you mean dropout"),
        ("dropuot = 0.5\n", "unknown key 'dropuot' in x.toml: did you mean dropout"),
        ("[data]\nepochs = 2\n", "'epochs' in [data] of x.toml belongs in [optim]: move it there"),
        (
            "[model]\nzzz = 1\n",
            "the keys of [model] are model, [model.args], hidden, blocks, batchnorm, dropout, head",
        ),
    ],
)
def test_toml_errors_say_where_and_what_was_meant(tmp_path, toml, message):
    from overfitlab.config import load_toml
    from overfitlab.errors import OverfitlabError

    (tmp_path / "x.toml").write_text(toml)
    with pytest.raises(OverfitlabError) as caught:
        load_toml(tmp_path / "x.toml")
    text = str(caught.value).replace(str(tmp_path / "x.toml"), "x.toml")
    assert message in text
    assert "label_smoothing" not in text  # never every key


def test_version_comes_from_the_package_metadata(run_cli):
    import overfitlab

    assert overfitlab.__version__ == metadata.version("overfitlab")
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"overfitlab {overfitlab.__version__}"


def _parsers(parser: argparse.ArgumentParser, path: str = "overfitlab"):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{path} {name}")


def test_every_command_and_flag_has_a_description():
    from overfitlab.cli import build_parser

    for path, parser in _parsers(build_parser()):
        assert parser.description, f"`{path} --help` has no description"
        for action in parser._actions:
            if action.option_strings or action.dest not in ("help",):
                if isinstance(action, argparse._SubParsersAction):
                    continue
                assert action.help, f"{path} {action.option_strings or action.dest} has no help"


def test_study_help_shows_the_value_a_study_uses(run_cli):
    text = " ".join(run_cli("study", "--help").stdout.split())
    assert "--epochs EPOCHS maximum number of epochs (default: the spec's or preset's)" in text
    assert "(default: 10)" not in text


def test_short_runs_get_whole_epoch_ticks():
    from overfitlab.history import History
    from overfitlab.viz.plots import curves_figure

    history = History(
        [
            {"epoch": e, "train_loss": 1 / e, "valid_loss": 1.2 / e, "train_acc": 0.5, "valid_acc": 0.4}
            for e in (1, 2, 3, 4)
        ]
    )
    figure = curves_figure(history, best_epoch=3)
    figure.canvas.draw()
    for ax in figure.axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks


def test_study_json_carries_the_comparisons_of_the_report(mixed_runs, run_cli):
    """Checked against the rows themselves and scipy's paired t-test."""
    from scipy import stats as scipy_stats

    from overfitlab.studies.index import RunIndex
    from overfitlab.studies.result import StudyResult, variant_table

    with RunIndex(mixed_runs / "runs" / "index.sqlite") as index:
        rows = index.runs("mini")
    result = StudyResult("mini", mixed_runs / "runs" / "mini", "complete", rows, variant_table(rows), 1.0)
    document = json.loads(json.dumps(result.to_dict()))
    comparisons = document["comparisons"]
    assert comparisons["baseline"] == "baseline"
    (l2,) = comparisons["remedies"]
    gap = l2["differences"]["final_gap_acc"]
    base = {r["seed"]: r["final_gap_acc"] for r in rows if r["variant"] == "baseline"}
    remedy = {r["seed"]: r["final_gap_acc"] for r in rows if r["variant"] == "l2"}
    diffs = [remedy[s] - base[s] for s in (0, 1)]
    assert gap["mean"] == pytest.approx(sum(diffs) / 2, abs=1e-6) and gap["n"] == 2
    assert l2["gap_reduction"] == pytest.approx(-sum(diffs) / 2, abs=1e-6)
    if gap["p_value"] is not None:
        expected = scipy_stats.ttest_rel([remedy[s] for s in (0, 1)], [base[s] for s in (0, 1)]).pvalue
        assert gap["p_value"] == pytest.approx(expected, abs=1e-6)
    assert "valid accuracy" in l2["verdict"]  # judged by held-out accuracy, never by the gap


def test_an_index_from_an_older_version_is_rebuilt_from_the_folders(tmp_path, run_cli):
    assert run_cli("train", "--name", "old", *TINY).returncode == 0
    path = tmp_path / "runs" / "index.sqlite"
    with sqlite3.connect(path) as db:  # the columns of an older overfitlab
        db.execute("ALTER TABLE runs RENAME COLUMN peak_valid_acc TO best_valid_acc")
    listed = run_cli("runs", "list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[1].split()[:2] == ["old", "complete"]
