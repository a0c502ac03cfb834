"""Engine choices made for speed change no number: each is checked against the plain way.

foreach optimizers against torch's single-tensor loop, channels_last against
contiguous, inference-mode validation at any batch size against a plain
``no_grad`` loop, the allocator setting against page-fault counts.
"""

from __future__ import annotations

import copy
import math
import resource
import sys

import pytest
import torch
import torch.nn.functional as F

from overfitlab.config import Config
from overfitlab.data.split import Split
from overfitlab.environment import keep_freed_memory, resolve_threads
from overfitlab.models.factory import create_model
from overfitlab.runs.build import build_optimizer, memory_format_for
from overfitlab.runs.train import train
from overfitlab.training.trainer import Trainer


def small_split(n: int = 96, size: int = 28, seed: int = 0) -> Split:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, size, size), generator=g, dtype=torch.uint8)
    return Split(images, torch.randint(0, 10, (n,), generator=g))


# --------------------------------------------------------------------------- optimizers
@pytest.mark.parametrize(
    "recipe",
    [
        dict(optimizer="adam"),
        dict(optimizer="adam", weight_decay=1e-3),
        dict(optimizer="adamw", weight_decay=0.1),
        dict(optimizer="sgd", momentum=0.9, nesterov=True, weight_decay=1e-3, lr=0.05),
    ],
)
def test_foreach_optimizer_updates_equal_the_single_tensor_loop_bit_for_bit(recipe):
    config = Config(**recipe)
    torch.manual_seed(0)
    model = create_model("seed-cnn", hidden=4, dropout=0.0)
    reference = copy.deepcopy(model)
    ours = build_optimizer(config, model)
    # torch's plain per-parameter loop, same groups (decay only on weights).
    theirs_cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[
        config.optimizer
    ]
    groups = [
        {
            **g,
            "params": [
                dict(reference.named_parameters())[n]
                for n, p in model.named_parameters()
                if any(p is q for q in g["params"])
            ],
        }
        for g in ours.param_groups
    ]
    extra = {"momentum": config.momentum, "nesterov": config.nesterov} if config.optimizer == "sgd" else {}
    theirs = theirs_cls(
        [{"params": g["params"], "weight_decay": g["weight_decay"]} for g in groups],
        lr=config.lr,
        foreach=False,
        **extra,
    )
    split = small_split()
    for step in range(12):
        x = split.images[step * 8 : (step + 1) * 8].float() / 255
        y = split.labels[step * 8 : (step + 1) * 8]
        for net, opt in ((model, ours), (reference, theirs)):
            opt.zero_grad()
            F.cross_entropy(net(x), y).backward()
            opt.step()
    for (name, a), b in zip(model.named_parameters(), reference.parameters(), strict=True):
        assert torch.equal(a, b), name


def _train_steps(model, optimizer, steps, start=0):
    split = small_split()
    for step in range(start, start + steps):
        x = split.images[(step % 12) * 8 : (step % 12 + 1) * 8].float() / 255
        y = split.labels[(step % 12) * 8 : (step % 12 + 1) * 8]
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()


def _torch_adam(model, config):
    from overfitlab.training.regularizers import param_groups

    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return cls(param_groups(model, config.weight_decay), lr=config.lr, foreach=False)


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_flat_adam_state_moves_to_and_from_torch_adam(optimizer):
    """A checkpoint of either optimizer resumes in the other with the same numbers."""
    from overfitlab.training.flat_adam import FlatAdam

    config = Config(optimizer=optimizer, weight_decay=0.05 if optimizer == "adamw" else 1e-3)
    torch.manual_seed(2)
    start = create_model("seed-cnn", hidden=4, dropout=0.0).to(memory_format=torch.channels_last)
    flat_model, torch_model = copy.deepcopy(start), copy.deepcopy(start)
    flat, plain = build_optimizer(config, flat_model), _torch_adam(torch_model, config)
    assert isinstance(flat, FlatAdam)
    _train_steps(flat_model, flat, 5)
    _train_steps(torch_model, plain, 5)
    # Swap the states: each continues from the other's checkpoint.
    flat_state, torch_state = copy.deepcopy(flat.state_dict()), copy.deepcopy(plain.state_dict())
    flat.load_state_dict(torch_state)
    plain.load_state_dict(flat_state)
    _train_steps(flat_model, flat, 5, start=5)
    _train_steps(torch_model, plain, 5, start=5)
    for a, b in zip(flat_model.parameters(), torch_model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_flat_adam_falls_back_to_torch_when_parameters_are_replaced():
    config = Config()
    torch.manual_seed(3)
    model = create_model("seed-gap")
    reference = copy.deepcopy(model)
    flat, plain = build_optimizer(config, model), _torch_adam(reference, config)
    _train_steps(model, flat, 3)
    _train_steps(reference, plain, 3)
    # .to(memory_format) gives the parameters new tensors: the flat buffers no longer hold them.
    model.to(memory_format=torch.channels_last)
    reference.to(memory_format=torch.channels_last)
    _train_steps(model, flat, 3, start=3)
    _train_steps(reference, plain, 3, start=3)
    for a, b in zip(model.parameters(), reference.parameters(), strict=True):
        assert torch.equal(a, b)


# --------------------------------------------------------------------------- memory format
def test_auto_memory_format_is_channels_last_on_cpu_only():
    config = Config()
    assert memory_format_for(config, torch.device("cpu")) == torch.channels_last
    assert memory_format_for(config.replace(dataset="mnist"), torch.device("cpu")) == torch.channels_last
    assert memory_format_for(config, torch.device("cuda")) == torch.contiguous_format
    assert (
        memory_format_for(config.replace(memory_format="contiguous"), torch.device("cpu"))
        == torch.contiguous_format
    )


def _history(memory_format: str, **recipe) -> dict[str, list[float]]:
    result = train(Config(train_size=192, epochs=2, threads=1, memory_format=memory_format, **recipe))
    return {k: result.history.column(k) for k in ("train_loss", "train_acc", "valid_loss", "valid_acc")}


@pytest.mark.parametrize(
    "recipe",
    [
        dict(model="seed-cnn", hidden=8, batchnorm=False, dropout=0.2),  # dropout: masks in logical order
        dict(model="seed-gap"),
    ],
)
def test_channels_last_and_contiguous_give_the_same_history(recipe):
    contiguous, channels_last = _history("contiguous", **recipe), _history("channels_last", **recipe)
    for column in contiguous:
        assert channels_last[column] == pytest.approx(contiguous[column], rel=1e-5, abs=1e-6), column


def test_channels_last_with_batchnorm_trains_the_same():
    """With batch norm the training columns agree; validation may not, for a reason of the model.

    A conv bias right before batch norm gets a gradient that is zero up to rounding;
    Adam divides it by its own size and moves the bias by a full learning-rate step
    in a direction set by rounding noise, so the two layouts drift apart in that bias
    and in the running mean that follows it. Training (batch statistics) cancels the
    bias; evaluation (running statistics) shows the lag.
    """
    contiguous = _history("contiguous", model="seed-cnn", hidden=8)
    channels_last = _history("channels_last", model="seed-cnn", hidden=8)
    for column in ("train_loss", "train_acc"):
        assert channels_last[column] == pytest.approx(contiguous[column], rel=1e-5), column


# --------------------------------------------------------------------------- validation
def _plain_validation(model: torch.nn.Module, split: Split) -> tuple[float, float]:
    """The textbook loop: eval mode, no_grad, batches of 32, float64 sums."""
    model.eval()
    loss_sum, correct = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(split), 32):
            x = split.images[start : start + 32].float() / 255
            y = split.labels[start : start + 32]
            out = model(x)
            loss_sum += F.cross_entropy(out.double(), y, reduction="sum").item()
            correct += int((out.argmax(1) == y).sum())
    return loss_sum / len(split), correct / len(split)


@pytest.mark.parametrize("valid_batch_size", [1, 7, 250, 1000])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_inference_mode_validation_equals_a_plain_no_grad_loop(valid_batch_size, memory_format):
    torch.manual_seed(1)
    model = create_model("seed-cnn", hidden=4)
    model.train()
    warm = small_split(64, seed=2).images.float() / 255
    model(warm)  # BN running statistics away from their initial values
    split = small_split(301, seed=3)
    expected_loss, expected_acc = _plain_validation(copy.deepcopy(model), split)
    model = model.to(memory_format=memory_format)
    trainer = Trainer(
        model,
        torch.optim.SGD(model.parameters(), lr=0.0),
        valid_batch_size=valid_batch_size,
        memory_format=memory_format,
    )
    loss, acc = trainer.evaluate(split)
    assert acc == expected_acc
    assert loss == pytest.approx(expected_loss, rel=1e-6)


# --------------------------------------------------------------------------- environment
def test_threads_never_exceed_the_cores(monkeypatch):
    import overfitlab.environment as environment

    monkeypatch.setattr(environment, "available_cores", lambda: 2)
    assert resolve_threads(None) == 2
    assert resolve_threads(1) == 1
    assert resolve_threads(8) == 2


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning is Linux-only")
def test_keeping_freed_memory_stops_validation_page_faults():
    """Without the setting glibc faults ~30 pages per image back in on every pass."""
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")
    assert keep_freed_memory()
    model = create_model("seed-cnn", hidden=16).to(memory_format=torch.channels_last)
    trainer = Trainer(
        model,
        torch.optim.SGD(model.parameters(), lr=0.0),
        valid_batch_size=250,
        memory_format=torch.channels_last,
    )
    split = small_split(1000)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # other tests' runs may have set more; worker threads have their own heaps
    try:
        trainer.evaluate(split)  # the first passes grow the heap
        trainer.evaluate(split)
        counts = []
        for _ in range(3):  # the process's count: the quietest pass leaves out other threads' faults
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            trainer.evaluate(split)
            counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    finally:
        torch.set_num_threads(threads)
    assert min(counts) < 2000, counts  # untuned: about 29 000 for these 1000 images


# --------------------------------------------------------------------------- per-step records
def test_batch_records_are_the_losses_each_step_computed():
    """The losses kept on the device for one sync per epoch are the ones each step saw."""
    from overfitlab.training.callbacks import Callback

    class Seen(Callback):
        def __init__(self):
            self.losses = []

        def on_batch_end(self, trainer, batch, loss):
            self.losses.append(loss.item())

    seen = Seen()
    result = train(Config(train_size=160, epochs=2, threads=1), callbacks=[seen])
    recorded = [b["loss"] for b in result.history.batches]
    assert recorded == seen.losses  # float32 values, widened exactly
    for epoch in (1, 2):
        batches = [b["loss"] for b in result.history.batches if b["epoch"] == epoch]
        assert result.history.record_at(epoch)["train_loss"] == pytest.approx(sum(batches) / len(batches))


# --------------------------------------------------------------------------- run folder writes
def test_files_hold_the_last_finished_epoch_whenever_training_ends(tmp_path):
    """Writes are spaced out (SAVE_EVERY_SECONDS) but never lost: Ctrl-C flushes the last epoch."""
    import json

    from overfitlab.errors import Interrupted
    from overfitlab.runs.checkpoint import load_checkpoint
    from overfitlab.training.callbacks import Callback

    class CtrlCAt(Callback):
        def on_epoch_end(self, trainer, epoch, metrics):
            if epoch == 4:
                raise KeyboardInterrupt

    config = Config(train_size=96, epochs=8, threads=1)
    with pytest.raises(Interrupted):
        train(config, tmp_path / "cut", callbacks=[CtrlCAt()])
    history = json.loads((tmp_path / "cut" / "history.json").read_text())
    assert [e["epoch"] for e in history["epochs"]] == [1, 2, 3, 4]
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["epoch"] == 4
    whole = train(config, tmp_path / "whole")
    history = json.loads((tmp_path / "whole" / "history.json").read_text())
    assert len(history["epochs"]) == 8 and len(history["batches"]) == 8 * 3
    assert load_checkpoint(tmp_path / "whole" / "last.pt")["epoch"] == 8
    best = load_checkpoint(tmp_path / "whole" / "best.pt")
    assert best["epoch"] == whole.best_epoch
    lowest = min(whole.history.epochs, key=lambda r: r["valid_loss"])["epoch"]
    assert best["epoch"] == lowest


# --------------------------------------------------------------------------- opt-in numerics
def test_bf16_autocast_is_opt_in_and_stays_close():
    base = _history("channels_last", model="seed-gap")
    again = _history("channels_last", model="seed-gap")
    bf16 = train(Config(train_size=192, epochs=2, threads=1, model="seed-gap", bf16=True)).history
    assert again == base  # off by default: runs repeat exactly
    assert bf16.column("valid_loss") != base["valid_loss"]  # it did run in bfloat16
    assert bf16.column("valid_loss") == pytest.approx(base["valid_loss"], rel=0.05)


def test_autocast_runs_the_model_in_bfloat16():
    model = create_model("seed-gap")
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.0), autocast_dtype=torch.bfloat16)
    seen = []
    model.classifier.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    trainer.evaluate(small_split(8))
    assert seen == [torch.bfloat16]


@pytest.mark.slow
def test_compiled_model_keeps_the_eager_checkpoint_keys(tmp_path):
    from overfitlab.runs.checkpoint import load_checkpoint

    result = train(Config(train_size=96, epochs=1, threads=1, compile=True), tmp_path / "run")
    eager = create_model("seed-cnn", in_shape=(1, 8, 8))
    assert list(load_checkpoint(tmp_path / "run" / "best.pt")["model"]) == list(eager.state_dict())
    assert all(math.isfinite(v) for v in result.history.column("valid_loss"))


# --------------------------------------------------------------------------- CUDA
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
def test_cuda_run_keeps_data_and_model_on_the_device():
    config = Config(train_size=192, epochs=2, device="cuda", threads=1)
    result = train(config)
    assert all(p.device.type == "cuda" for p in result.model.parameters())
    assert all(math.isfinite(v) for v in result.history.column("valid_loss"))
    # The same recipe on CPU reaches the same accuracy range (different kernels, same law).
    cpu = train(config.replace(device="cpu"))
    assert abs(result.history[-1]["valid_acc"] - cpu.history[-1]["valid_acc"]) < 0.15


@cuda
def test_cuda_bf16_and_compile_train():
    result = train(Config(train_size=192, epochs=2, device="cuda", bf16=True, compile=True))
    losses = result.history.column("train_loss")
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]


def test_callbacks_are_torn_down_however_fit_ends(digits):
    """on_teardown runs after a normal end, a divergence and Ctrl-C; on_fit_end only after
    training finished, so a progress bar or a TensorBoard writer is never left open."""
    from overfitlab.config import Config
    from overfitlab.runs.train import start_run
    from overfitlab.training.callbacks import Callback
    from overfitlab.training.progress import EpochProgress
    from overfitlab.training.trainer import Diverged

    class Seen(Callback):
        def __init__(self, interrupt_at: int | None = None):
            self.events: list[str] = []
            self.interrupt_at = interrupt_at

        def on_epoch_end(self, trainer, epoch, metrics):
            if epoch == self.interrupt_at:
                raise KeyboardInterrupt

        def on_fit_end(self, trainer):
            self.events.append("fit_end")

        def on_teardown(self, trainer):
            self.events.append("teardown")

    cases = [
        (Config(train_size=64, epochs=2), None, None, ["fit_end", "teardown"]),
        (Config(train_size=64, epochs=2), 1, KeyboardInterrupt, ["teardown"]),
        (Config(train_size=64, epochs=3, lr=1e30), None, Diverged, ["teardown"]),
    ]
    for config, interrupt_at, raised, expected in cases:
        seen, bar = Seen(interrupt_at), EpochProgress(config.epochs)
        run = start_run(config, callbacks=[seen, bar])
        if raised is None:
            run.trainer.fit(run.data, config.epochs)
        else:
            with pytest.raises(raised):
                run.trainer.fit(run.data, config.epochs)
        assert seen.events == expected
        assert bar._bar is None  # closed
