"""The example notebooks executed in a real Jupyter kernel, live curves counted through the
kernel's own messages, the rich displays, the progress bars and MLflow read back."""

from __future__ import annotations

import io
import json
import textwrap
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parents[1] / "examples"
nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")


def outputs(notebook) -> list[dict]:
    return [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]


def texts(notebook) -> str:
    parts = []
    for o in outputs(notebook):
        parts.append(o.get("text", ""))
        parts.extend(str(v) for k, v in o.get("data", {}).items() if k in ("text/plain", "text/html"))
    return "\n".join(parts)


@pytest.fixture
def execute(tmp_path, monkeypatch):
    """Run a notebook of examples/ top to bottom in a fresh kernel, in tmp_path, on the
    built-in digits (OVERFITLAB_QUICK); a cell that raises fails the test."""
    monkeypatch.setenv("OVERFITLAB_QUICK", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")

    def run(name: str):
        notebook = nbformat.read(EXAMPLES / name, as_version=4)
        client = nbclient.NotebookClient(
            notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
        )
        client.execute()
        return notebook

    return run


@pytest.mark.parametrize("name", ["01_tutorial.ipynb", "02_your_model.ipynb"])
def test_example_notebooks_are_stored_without_outputs(name):
    notebook = nbformat.read(EXAMPLES / name, as_version=4)
    assert all(
        not c.get("outputs") and c.get("execution_count") is None
        for c in notebook.cells
        if c.cell_type == "code"
    )


def test_the_tutorial_notebook_runs_and_shows_the_tutorials_numbers(execute):
    notebook = execute("01_tutorial.ipynb")
    text = texts(notebook)
    for count in ("80,806", "80,758", "3,958"):  # the three models on 28×28, as the tutorial
        assert f"{count} parameters on 1×28×28" in text
    assert not any(o.output_type == "error" for o in outputs(notebook))
    html = [o["data"]["text/html"] for o in outputs(notebook) if "text/html" in o.get("data", {})]
    assert any("final valid acc" in h and "data:image/png;base64," in h for h in html)  # a run
    assert any("<th>layer</th>" in h and "8,806" in h for h in html)  # a summary, 8×8 digits
    assert any(h.count("<tr>") >= 12 and "study" in h and "peak valid acc" in h for h in html)  # a study
    live = [o for o in outputs(notebook) if o.output_type == "display_data" and "image/png" in o["data"]]
    assert len(live) >= 2  # one live picture per trained cell, each updated in place
    assert "report.html" in text
    # The transfer study: each fine-tuning variant decided against the fine-tuned baseline.
    assert all(f"  {name} " in text for name in ("scratch", "freeze", "discriminative"))


def test_the_your_model_notebook_runs(execute):
    notebook = execute("02_your_model.ipynb")
    assert not any(o.output_type == "error" for o in outputs(notebook))
    text = texts(notebook)
    assert "SmallNet" in text and "stopped at" in text and "valid acc of the returned model" in text


# ---------------------------------------------------------------- live curves, counted in a kernel
LIVE_CELL = """
print("before training")
from overfitlab import Config, EarlyStopping, Trainer
from overfitlab.data import load_dataset, prepare
from overfitlab.models import create_model
from overfitlab.training import LiveCurves
import torch
torch.manual_seed(0)
data = prepare(load_dataset("digits"), 200, 0.0, 0)
model = create_model("seed-gap", data.image_shape, data.classes)
live = LiveCurves(every=0.0)
Trainer(model, torch.optim.Adam(model.parameters()), callbacks=[live]).fit(data, {epochs})
print("after training", live.draws)
"""


def kernel_messages(code: str) -> list[dict]:
    """Every iopub message of one execution in a real kernel."""
    from jupyter_client.manager import start_new_kernel

    manager, client = start_new_kernel(kernel_name="python3")
    try:
        msg_id = client.execute(code)
        messages = []
        while True:
            message = client.get_iopub_msg(timeout=300)
            if message["parent_header"].get("msg_id") != msg_id:
                continue
            messages.append(message)
            if message["msg_type"] == "status" and message["content"]["execution_state"] == "idle":
                return messages
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def test_live_curves_update_one_output_in_place_and_keep_the_cells_other_output():
    epochs = 4
    messages = kernel_messages(LIVE_CELL.format(epochs=epochs))
    kinds = [m["msg_type"] for m in messages]
    assert "error" not in kinds, [m["content"] for m in messages if m["msg_type"] == "error"]
    created = [m for m in messages if m["msg_type"] == "display_data"]
    updated = [m for m in messages if m["msg_type"] == "update_display_data"]
    # Drawn at every epoch end (every=0) and once more when fit ends: 1 display, then updates.
    assert len(created) == 1 and len(updated) == epochs
    display_id = created[0]["content"]["transient"]["display_id"]
    assert {m["content"]["transient"]["display_id"] for m in updated} == {display_id}
    assert all("image/png" in m["content"]["data"] for m in created + updated)
    assert "clear_output" not in kinds  # the cell's other output stays
    printed = "".join(m["content"]["text"] for m in messages if m["msg_type"] == "stream")
    assert "before training" in printed and f"after training {epochs + 1}" in printed


def test_live_curves_are_throttled_and_end_on_the_final_picture():
    messages = kernel_messages(LIVE_CELL.format(epochs=6).replace("every=0.0", "every=3600.0"))
    assert [m["msg_type"] for m in messages].count("display_data") == 1
    assert [m["msg_type"] for m in messages].count("update_display_data") == 1  # the final one


def test_outside_a_notebook_live_curves_draw_nothing(digits):
    import torch

    from overfitlab import Trainer
    from overfitlab.models.factory import create_model
    from overfitlab.training.live import LiveCurves

    live = LiveCurves(every=0.0)
    model = create_model("seed-gap", digits.image_shape, digits.classes)
    Trainer(model, torch.optim.Adam(model.parameters()), callbacks=[live], max_batches=2).fit(digits, 2)
    assert live.draws == 0 and live.handle is None


# ---------------------------------------------------------------- rich displays
def test_rich_displays_escape_every_string_and_show_the_numbers(digits):
    from overfitlab import Config, train
    from overfitlab.models.summary import summarize, summary_html

    stats = summarize("seed-gap", (1, 8, 8), 10)
    stats.name = "<script>alert(1)</script>"
    page = summary_html(stats)
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert f"{stats.total_params:,}" in page and "1×8×8" in page
    assert repr(stats).startswith("ModelSummary('<script>") and "3,958 params" in repr(stats)
    result = train(Config(train_size=120, epochs=2, hidden=4, threads=1))
    page = result._repr_html_()
    summary = result.summary()
    assert f"{summary['final_valid_acc']:.4f}" in page and "data:image/png;base64," in page
    assert "final valid acc" in repr(result) and "digits" in repr(result)


# ---------------------------------------------------------------- terminal progress
def test_epoch_progress_draws_with_tqdm_and_ends_each_epoch_with_its_line(digits):
    import torch

    from overfitlab import Trainer
    from overfitlab.models.factory import create_model
    from overfitlab.training.progress import EpochProgress

    stream = io.StringIO()
    model = create_model("seed-gap", digits.image_shape, digits.classes)
    trainer = Trainer(
        model, torch.optim.Adam(model.parameters()), callbacks=[EpochProgress(3, stream)], max_batches=5
    )
    history = trainer.fit(digits, 3)
    text = stream.getvalue()
    for record in history.epochs:
        assert f"epoch {record['epoch']}/3  train loss {record['train_loss']:.4f}" in text
    assert "batch" in text and "1/5 [" in text  # tqdm's bar over the epoch's batches


# ---------------------------------------------------------------- MLflow, read back
def metric_history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def check_logged(client, run, run_dir: Path) -> int:
    """Every epoch metric of the MLflow run equals the run folder's history.json; returns
    how many values were checked."""
    epochs = json.loads((run_dir / "history.json").read_text())["epochs"]
    checked = 0
    for key in ("train_loss", "train_acc", "valid_loss", "valid_acc", "gap_acc", "lr"):
        expected = [(e["epoch"], e[key]) for e in epochs]
        assert metric_history(client, run.info.run_id, key) == expected, key  # exact: doubles both
        checked += len(expected)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert run.data.metrics["final_valid_acc"] == pytest.approx(summary["final_valid_acc"], abs=0)
    assert run.data.tags["overfitlab.stop_reason"] == summary["stop_reason"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"curves.png", "summary.json"} <= artifacts
    return checked


def test_mlflow_logs_train_and_study_runs_that_read_back_as_their_folders(tmp_path, run_cli):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    flags = ["--train-size", "120", "--epochs", "4", "--hidden", "4", "--threads", "1", "--quiet"]
    assert run_cli("train", "--name", "one", "--mlflow", *flags).returncode == 0
    spec = tmp_path / "s.toml"
    spec.write_text(
        textwrap.dedent(
            """
            name = "tracked"
            seeds = 2
            [base]
            train_size = 120
            epochs = 3
            hidden = 4
            [[variant]]
            name = "baseline"
            [[variant]]
            name = "l2"
            l2 = 0.001
            """
        )
    )
    study = run_cli("study", str(spec), "--name", "tracked", "--backend", "local", "--mlflow", "--quiet")
    assert study.returncode == 0, study.stderr
    uri = f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("overfitlab")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    by_name = {r.info.run_name: r for r in runs}
    assert set(by_name) == {"one", "tracked", "baseline-s0", "baseline-s1", "l2-s0", "l2-s1"}
    checked = check_logged(client, by_name["one"], tmp_path / "runs" / "one")
    parent = by_name["tracked"].info.run_id
    for name in ("baseline-s0", "baseline-s1", "l2-s0", "l2-s1"):
        run = by_name[name]
        assert run.data.tags["mlflow.parentRunId"] == parent
        assert run.data.tags["overfitlab.variant"] == name.rsplit("-", 1)[0]
        assert run.data.tags["overfitlab.seed"] == name[-1]
        checked += check_logged(client, run, tmp_path / "runs" / "tracked" / name)
    assert by_name["one"].data.params["train_size"] == "120"
    assert checked == 6 * (4 + 4 * 3)  # 6 metrics × (one 4-epoch run + four 3-epoch runs)


def test_mlflow_without_the_extra_or_with_a_bad_uri_is_one_line(tmp_path, run_cli):
    pytest.importorskip("mlflow")
    result = run_cli("train", "--mlflow", "--mlflow-uri", "nosuchscheme://x", "--epochs", "1")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "cannot use the MLflow tracking store" in lines[0]
    assert not (tmp_path / "runs").exists() or not any(p.is_dir() for p in (tmp_path / "runs").iterdir())
