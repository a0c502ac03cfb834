"""Backends: resources never oversubscribe, and serial, local and Ray runs give identical numbers."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import cli_command, cli_env

from overfitlab.errors import OverfitlabError
from overfitlab.studies import backends
from overfitlab.studies.backends import LocalBackend, SerialBackend, resources
from overfitlab.studies.index import RunIndex
from overfitlab.studies.loop import run_study
from overfitlab.studies.spec import make_spec

try:
    import ray  # noqa: F401

    HAVE_RAY = True
except ImportError:
    HAVE_RAY = False
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="ray is not installed (pip install 'overfitlab[ray]')")

# Dropout and augmentation draw random numbers every step: the strictest test of "same seed,
# same numbers" across processes.
SPEC = make_spec(
    {"train_size": 120, "epochs": 2, "hidden": 4, "batch_size": 40},
    [("baseline", {}), ("noisy", {"dropout": 0.3, "augment": True})],
    seeds=[0, 1],
)
TIMING = {"started_at", "ended_at", "seconds", "run_dir"}
TIMING_COLUMNS = {"train_seconds", "valid_seconds", "epoch_seconds"}


# --------------------------------------------------------------------------- resources
def test_local_defaults_to_one_thread_per_run_and_a_run_per_core():
    assert resources("local", cores=8) == backends.Resources("local", 8, 1, 8)
    # One thread per run on every backend unless told: a run's numbers depend on its threads.
    assert resources("local", workers=2, cores=8).threads == 1
    assert resources("local", threads=2, cores=8).workers == 4
    assert resources("local", cores=8, runs=3).workers == 3  # no idle workers
    assert resources("serial", cores=8) == backends.Resources("serial", 1, 1, 8)
    assert resources("serial", threads=1, cores=8).threads == 1
    assert resources("ray", cores=4).workers == 4
    assert resources("ray", address="10.0.0.1:6379", runs=50, cores=2).workers == 50  # the cluster schedules


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            dict(backend="local", workers=2, threads=2, cores=2),
            "oversubscribe the 2 cores.*--workers 1 or --threads 1",
        ),
        (dict(backend="ray", workers=3, threads=1, cores=2), "oversubscribe"),
        (dict(backend="serial", workers=2, cores=2), "--workers needs --backend local or ray"),
        (dict(backend="local", address="x:1", cores=2), "--address joins a Ray cluster: add --backend ray"),
        (dict(backend="dask", cores=2), "unknown backend 'dask': choose one of serial, local, ray"),
        (dict(backend="local", workers=0, cores=2), "--workers must be ≥ 1"),
    ],
)
def test_bad_resources_are_one_line_errors(kwargs, message):
    with pytest.raises(OverfitlabError, match=message):
        resources(**kwargs)


def test_ray_missing_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray → ImportError
    with pytest.raises(OverfitlabError, match=r"pip install 'overfitlab\[ray\]'"):
        backends.create(resources("ray", cores=2))


# --------------------------------------------------------------------------- execution
def square_or_fail(x):
    if x == "die":
        os._exit(3)  # a worker that dies without a word, as an out-of-memory kill would
    if x == "raise":
        raise ValueError("bad payload")
    return x * x


def test_serial_backend_records_errors_and_goes_on():
    started = []
    out = list(SerialBackend().execute(square_or_fail, [2, "raise", 3], started.append))
    assert started == [0, 1, 2]
    assert [(p, r) for p, r, e in out] == [(0, 4), (1, None), (2, 9)]
    assert isinstance(out[1][2], ValueError)


def test_local_backend_survives_a_dying_worker():
    with LocalBackend(workers=1) as backend:
        out = sorted(backend.execute(square_or_fail, [2, "die", "raise", 5]), key=lambda o: o[0])
    assert [r for _, r, _ in out] == [4, None, None, 25]
    assert "died abruptly" in str(out[1][2])
    assert isinstance(out[2][2], ValueError) and "bad payload" in str(out[2][2])


# --------------------------------------------------------------------------- same numbers everywhere
def rows_without_timing(runs_dir: Path, study: str) -> list[dict]:
    with RunIndex(runs_dir / "index.sqlite") as index:
        rows = index.runs(study)
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def histories(runs_dir: Path, study: str) -> dict[str, list]:
    out = {}
    for path in sorted((runs_dir / study).glob("*/history.json")):
        data = json.loads(path.read_text())
        out[path.parent.name] = [
            {k: v for k, v in e.items() if k not in TIMING_COLUMNS} for e in data["epochs"]
        ]
        out[path.parent.name + "/batches"] = data["batches"]
    return out


@pytest.fixture(scope="module")
def serial_reference(tmp_path_factory):
    runs_dir = tmp_path_factory.mktemp("serial")
    # Default flags everywhere: every backend's default is one thread per run.
    result = run_study(SPEC, runs_dir, "same", backend="serial", report=False)
    assert result.status == "complete"
    return runs_dir


def assert_same_numbers(runs_dir: Path, reference: Path) -> None:
    expected = rows_without_timing(reference, "same")
    assert len(expected) == 4 and all(r["status"] == "complete" for r in expected)
    assert rows_without_timing(runs_dir, "same") == expected  # every metric, exactly
    assert histories(runs_dir, "same") == histories(reference, "same")  # every epoch and batch


def test_local_pool_gives_the_serial_numbers(tmp_path, serial_reference):
    run_study(SPEC, tmp_path, "same", backend="local", report=False)
    assert_same_numbers(tmp_path, serial_reference)
    with RunIndex(tmp_path / "index.sqlite") as index:
        study = index.study("same")
    assert (study["backend"], study["threads"]) == ("local", 1)


@needs_ray
@pytest.mark.slow
def test_private_ray_instance_gives_the_serial_numbers(tmp_path, serial_reference):
    result = run_study(SPEC, tmp_path, "same", backend="ray", report=False)
    assert result.status == "complete"
    assert_same_numbers(tmp_path, serial_reference)
    import ray

    assert not ray.is_initialized()  # the study's own Ray instance is gone


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@needs_ray
def test_ray_cluster_on_loopback_gives_the_serial_numbers(tmp_path, serial_reference, monkeypatch):
    ray_cli = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    if ray_cli is None:
        pytest.skip("the ray command is not on the PATH")
    port = free_port()
    # Token authentication (on by default in recent Ray) is for clusters on a network; this one
    # lives and dies inside the test, and the client below must not need the head's token.
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [
            ray_cli,
            "start",
            "--head",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            "--num-cpus=2",
            "--include-dashboard=false",
            "--disable-usage-stats",
        ],
        check=True,
        env=env,
        capture_output=True,
        timeout=120,
    )
    try:
        started = time.perf_counter()
        result = run_study(SPEC, tmp_path, "same", backend="ray", address=f"127.0.0.1:{port}", report=False)
        assert time.perf_counter() - started < 300
    finally:
        subprocess.run([ray_cli, "stop", "--force"], env=env, capture_output=True, timeout=120)
    assert result.status == "complete"
    assert_same_numbers(tmp_path, serial_reference)
    with RunIndex(tmp_path / "index.sqlite") as index:
        study = index.study("same")
    assert study["backend"] == "ray" and study["environment"]["ray"] == ray.__version__


def _can_hide_folders() -> bool:
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", "mount -t tmpfs none /mnt"],
        capture_output=True,
    )
    return probe.returncode == 0


@needs_ray
@pytest.mark.slow
def test_ray_node_that_cannot_see_the_runs_or_data_folder_gives_the_local_numbers(
    tmp_path, digits, monkeypatch
):
    """A user's factory and an image folder, on a Ray cluster whose only worker node runs under a
    tmpfs mounted over the study's folder (runs and data): the data reach it through the object
    store and its run folders come back. Same per-run numbers as the local pool."""
    from conftest import write_image_folder

    ray_cli = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    if ray_cli is None or shutil.which("unshare") is None or not _can_hide_folders():
        pytest.skip("needs the ray command and unshare --mount (root, or user namespaces)")
    hidden = tmp_path / "hidden"
    write_image_folder(hidden / "data", {"train": digits.train, "valid": digits.valid})
    model = Path(__file__).parents[1] / "examples" / "my_model.py"
    spec = make_spec(
        {"dataset": f"folder:{hidden / 'data'}", "model": f"{model}:build", "train_size": 150, "epochs": 2},
        [("baseline", {}), ("dropout", {"dropout": 0.3}), ("batchnorm", {"batchnorm": True})],
        seeds=[0],
    )
    local = run_study(spec, tmp_path / "local", "same", backend="local", report=False)
    assert [e["variant"] for e in local.left_out] == ["batchnorm"]
    port = free_port()
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1"}
    common = ["--disable-usage-stats", "--node-ip-address=127.0.0.1"]
    subprocess.run(
        [ray_cli, "start", "--head", f"--port={port}", "--num-cpus=0", "--include-dashboard=false", *common],
        check=True,
        env=env,
        capture_output=True,
        timeout=120,
    )
    try:
        hide = f"mount -t tmpfs none {hidden} && exec {ray_cli} start --address=127.0.0.1:{port} --num-cpus=2"
        subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", f"{hide} {' '.join(common)}"],
            check=True,
            env=env,
            capture_output=True,
            timeout=120,
        )
        # From the command line, as a user would (a fresh process: this one may already have
        # run a private Ray instance, whose node address Ray keeps for the process).
        spec_file = tmp_path / "spec.toml"
        spec_file.write_text(
            f'seeds = [0]\n[base]\ndataset = "folder:{hidden / "data"}"\nmodel = "{model}:build"\n'
            'train_size = 150\nepochs = 2\n[[variant]]\nname = "baseline"\n[[variant]]\nname = "dropout"\n'
            'dropout = 0.3\n[[variant]]\nname = "batchnorm"\nbatchnorm = true\n'
        )
        command = ["study", str(spec_file), "--backend", "ray", "--address", f"127.0.0.1:{port}"]
        done = subprocess.run(
            cli_command(*command, "--runs-dir", str(hidden / "runs"), "--name", "same", "--json"),
            env={**cli_env(), "RAY_AUTH_MODE": "disabled"},
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        subprocess.run([ray_cli, "stop", "--force"], env=env, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr + done.stdout
    result = json.loads(done.stdout)
    assert result["status"] == "complete" and result["left_out"] == local.left_out
    assert rows_without_timing(hidden / "runs", "same") == rows_without_timing(tmp_path / "local", "same")
    assert histories(hidden / "runs", "same") == histories(tmp_path / "local", "same")
