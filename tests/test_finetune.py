"""Fine-tuning: starting weights (--init, --pretrained) loaded exactly and reported, the input
adapted as the weights expect, freezing schedules, discriminative rates, L2-SP, the transfer
study, checkpoints, and bad inputs as one line with nothing left behind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF

from overfitlab.config import Config
from overfitlab.errors import OverfitlabError
from overfitlab.models.factory import build_model as build_plain
from overfitlab.models.parts import Adapted, InputAdaptation, body_blocks, find_head
from overfitlab.models.weights import read_state
from overfitlab.runs.build import build_model, build_optimizer, model_parts
from overfitlab.runs.checkpoint import load_checkpoint, load_model
from overfitlab.runs.train import train
from overfitlab.studies.presets import FINE_TUNING, preset
from overfitlab.training.callbacks import Callback
from overfitlab.training.finetune import block_rates, frozen_blocks, l2_sp_penalty

# The remedies preset's CNN (no batch norm, no dropout), small and quick on the 8×8 digits.
CNN = dict(model="seed-cnn", hidden=8, batchnorm=False, dropout=0.0, head="fc")


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    """A run trained on digits 0-4: the weights the tests fine-tune on 5-9."""
    folder = tmp_path_factory.mktemp("pre") / "run"
    train(Config(classes="0-4", epochs=8, **CNN), folder)
    return folder


def weights_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------- classes
def test_classes_keep_only_those_numbered_anew(digits):
    from overfitlab.data.edits import select_classes

    kept = select_classes(digits, (5, 6, 7, 8, 9))
    assert kept.classes == 5 and kept.class_names == ("5", "6", "7", "8", "9")
    for split, original in ((kept.train, digits.train), (kept.valid, digits.valid)):
        counts = np.bincount(original.labels.numpy(), minlength=10)[5:]
        assert np.bincount(split.labels.numpy(), minlength=5).tolist() == counts.tolist()
        # The images are those of the classes, in their order.
        assert torch.equal(split.images, original.images[original.labels >= 5])


# --------------------------------------------------------------------------- --init
def test_init_loads_every_tensor_and_reinit_head_draws_the_head(pretrained):
    saved = load_checkpoint(pretrained / "best.pt")["model"]
    config = Config(classes="5-9", init=str(pretrained), **CNN)
    built = build_model(config, (1, 8, 8), 5)
    assert all(torch.equal(built.module.state_dict()[k], v) for k, v in saved.items())
    assert built.start is not None and built.start["loaded"] == len(saved) and built.start["new"] == []
    assert f"{len(saved)} tensors" in built.notes[0]

    torch.manual_seed(0)
    fresh = build_model(config.replace(reinit_head=True), (1, 8, 8), 5).module.state_dict()
    head = ("classifier.2.weight", "classifier.2.bias")
    assert all(not torch.equal(fresh[k], saved[k]) for k in head)
    assert all(torch.equal(fresh[k], saved[k]) for k in saved if k not in head)


def test_init_other_class_count_needs_reinit_head_and_then_loads_the_body(pretrained):
    config = Config(classes="0-9", init=str(pretrained), **CNN)
    with pytest.raises(
        OverfitlabError, match=r"classifier.2.weight is \[5, 8\].*\[10, 8\]|add --reinit-head"
    ):
        build_model(config, (1, 8, 8), 10)
    built = build_model(config.replace(reinit_head=True), (1, 8, 8), 10)
    assert built.start is not None and built.start["new"] == ["classifier.2.weight", "classifier.2.bias"]


def test_init_matches_by_position_when_only_layer_numbers_differ(pretrained):
    # seed-cnn with dropout numbers its layers differently (features.3 → features.4).
    built = build_model(Config(classes="5-9", init=str(pretrained), **{**CNN, "dropout": 0.3}), (1, 8, 8), 5)
    saved = list(load_checkpoint(pretrained / "best.pt")["model"].values())
    assert all(torch.equal(a, b) for a, b in zip(built.module.state_dict().values(), saved, strict=True))


def test_state_files_of_every_kind_read_the_same_tensors(pretrained, tmp_path):
    from safetensors.torch import save_file

    state = load_checkpoint(pretrained / "best.pt")["model"]
    torch.save(state, tmp_path / "plain.pth")
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}}, tmp_path / "lightning.ckpt")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "w.safetensors"))
    for source in (pretrained, pretrained / "best.pt", tmp_path / "plain.pth", tmp_path / "w.safetensors"):
        assert all(torch.equal(read_state(source).state[k], v) for k, v in state.items())
    built = build_model(Config(classes="5-9", init=str(tmp_path / "lightning.ckpt"), **CNN), (1, 8, 8), 5)
    assert all(torch.equal(built.module.state_dict()[k], v) for k, v in state.items())


# --------------------------------------------------------------------------- parts
@pytest.mark.parametrize("ref", ["seed-cnn", "torchvision:resnet18", "torchvision:mobilenet_v3_small"])
def test_head_and_blocks_cover_every_parameter_once(ref):
    model = build_plain(ref, (3, 32, 32), 7).module
    head = find_head(model, 7)
    assert head is not None and head.module.weight.shape[0] == 7  # type: ignore[union-attr]
    blocks = body_blocks(model, head)
    ids = [id(p) for b in blocks for p in b.params] + [id(p) for p in head.module.parameters()]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())
    assert len(blocks) >= 2


def test_adapted_input_is_torchvisions_resize_and_normalize():
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x):
            seen.append(x)
            return x.mean((2, 3))

    adaptation = InputAdaptation(3, (20, 20), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    images = torch.rand(2, 1, 8, 8)
    Adapted(Probe(), adaptation)(images)
    expected = TF.normalize(
        TF.resize(images.repeat(1, 3, 1, 1), [20, 20], antialias=False),
        list(adaptation.mean),
        list(adaptation.std),
    )
    torch.testing.assert_close(seen[0], expected)


# --------------------------------------------------------------------------- schedules
def test_freezing_schedules_by_hand():
    # (freeze, freeze_epochs, every) → frozen blocks (of 3) in epochs 1..7
    table = {
        (True, 0, 0): [3, 3, 3, 3, 3, 3, 3],
        (False, 2, 0): [3, 3, 0, 0, 0, 0, 0],  # fastai fine_tune(freeze_epochs=2)
        (False, 1, 2): [3, 2, 2, 1, 1, 0, 0],  # ULMFiT: one more block every 2 epochs
        (False, 0, 1): [3, 2, 1, 0, 0, 0, 0],
        (False, 0, 0): [0, 0, 0, 0, 0, 0, 0],
    }
    for (freeze, first, every), expected in table.items():
        assert [frozen_blocks(e, 3, freeze, first, every) for e in range(1, 8)] == expected


def test_discriminative_rates_are_fastais_even_spread():
    rates = block_rates(0.01, 0.01, 4)
    np.testing.assert_allclose([*rates, 0.01], np.geomspace(0.01 * 0.01, 0.01, 5))


def test_optimizer_groups_carry_the_rates_and_every_parameter_once(pretrained):
    config = Config(classes="5-9", init=str(pretrained), body_lr_ratio=0.1, weight_decay=0.1, **CNN)
    model = build_model(config, (1, 8, 8), 5).module
    parts = model_parts(config, model, 5)
    assert parts is not None
    optimizer = build_optimizer(config, model, parts)
    groups = optimizer.param_groups
    assert groups[0]["name"] == "head" and groups[0]["lr"] == config.lr
    assert sorted(id(p) for g in groups for p in g["params"]) == sorted(id(p) for p in model.parameters())
    expected = dict(
        zip([b.name for b in parts.blocks], block_rates(0.01, 0.1, len(parts.blocks)), strict=True)
    )
    for group in groups[2:]:  # after the head's two
        assert group["lr"] == pytest.approx(expected[group["name"].removesuffix(" (no decay)")])
        assert group["weight_decay"] == (0.0 if "no decay" in group["name"] else 0.1)


def test_groups_at_ratio_one_train_bit_for_bit_as_plain_groups(pretrained):
    """Weight decay and L2 keep their semantics per group: with every rate the run's, the
    fine-tuning groups give the same weights as the plain decay/no-decay groups."""
    config = Config(classes="5-9", init=str(pretrained), train_size=60, epochs=2, l2=1e-3, weight_decay=0.01)
    config = config.replace(**CNN)
    plain = train(config).model.state_dict()
    grouped = train(config.replace(freeze_epochs=0, l2_sp=0.0, body_lr_ratio=1.0 + 1e-12)).model.state_dict()
    for key in plain:
        torch.testing.assert_close(grouped[key], plain[key], rtol=1e-5, atol=1e-7)


class Snapshots(Callback):
    def __init__(self):
        self.states = {}

    def on_epoch_end(self, trainer, epoch, metrics):
        self.states[epoch] = weights_of(trainer.model)


def test_freeze_epochs_keep_the_body_then_train_it(pretrained):
    start = load_checkpoint(pretrained / "best.pt")["model"]
    snaps = Snapshots()
    config = Config(classes="5-9", init=str(pretrained), train_size=60, epochs=4, freeze_epochs=2, **CNN)
    train(config, callbacks=[snaps])
    body = [k for k in start if not k.startswith("classifier.2.")]
    for epoch in (1, 2):
        assert all(torch.equal(snaps.states[epoch][k], start[k]) for k in body)
        assert not torch.equal(snaps.states[epoch]["classifier.2.weight"], start["classifier.2.weight"])
    assert not any(torch.equal(snaps.states[4][k], start[k]) for k in body)


def test_l2_sp_penalty_and_gradient_by_hand():
    w = torch.randn(4, 3, requires_grad=True)
    w0 = torch.randn(4, 3)
    value = l2_sp_penalty([(w, w0)], 0.05)
    value.backward()
    assert value.detach().item() == pytest.approx(0.05 * float(((w.detach() - w0) ** 2).sum()))
    torch.testing.assert_close(w.grad, 2 * 0.05 * (w.detach() - w0))


def test_l2_sp_keeps_the_body_near_its_start(pretrained):
    start = load_checkpoint(pretrained / "best.pt")["model"]
    config = Config(classes="5-9", init=str(pretrained), train_size=60, epochs=6, **CNN)

    def moved(model):  # squared distance of the body from its start (measured: 7.4 free, 1.9 at λ 1)
        state = model.state_dict()
        return sum(
            float((state[k] - start[k]).pow(2).sum()) for k in start if not k.startswith("classifier.2.")
        )

    assert moved(train(config.replace(l2_sp=1.0)).model) < 0.5 * moved(train(config).model)


# --------------------------------------------------------------------------- presets
def test_remedies_preset_on_a_start_adds_fine_tuning_and_drops_weighted_layers():
    names = [v.name for v in preset("remedies", 3, base={"init": "runs/x"}).variants]
    assert all(name in names for name, _ in FINE_TUNING)
    assert "batchnorm" not in names and "gap-head" not in names
    plain = [v.name for v in preset("remedies", 3).variants]
    assert "freeze" not in plain and "batchnorm" in plain
    # A remedy the recipe already applies is no variant: it would be the baseline again.
    again = [v.name for v in preset("remedies", 3, base={"init": "runs/x", "reinit_head": True}).variants]
    assert "reinit-head" not in again and "freeze" in again


def test_the_diagnosis_of_a_fine_tuned_recipe_trains_on_its_classes(pretrained, tmp_path):
    from overfitlab.data.edits import select_classes
    from overfitlab.diagnosis import diagnose

    overrides = {**CNN, "classes": "5-9", "init": str(pretrained), "reinit_head": True, "epochs": 15}
    result = diagnose(overrides, tmp_path, "d", budget="quick")
    # Its images are those of classes 5-9 (less the test split it holds out), not all ten.
    from overfitlab.data.registry import load_dataset

    five = len(select_classes(load_dataset("digits"), (5, 6, 7, 8, 9)).train)
    assert 0.75 * five <= result.learning_curve.available < five
    variants = {row["variant"] for row in result.remedies.decisions}
    assert {"scratch", "freeze", "discriminative"} <= variants and "batchnorm" not in variants
    notes = json.loads((tmp_path / "d" / "study" / "freeze-s0" / "summary.json").read_text())["model_notes"]
    assert any("loaded from" in note for note in notes) and any("body frozen" in note for note in notes)
    # Its flagged images are numbered as the data set numbers them: train --exclude reads them so.
    listed = (tmp_path / "d" / "label-issues.csv").read_text().splitlines()[1:]
    labels = load_dataset("digits").train.labels
    for row in listed:
        index, given_name = int(row.split(",")[2]), row.split(",")[6]
        assert str(int(labels[index])) == given_name


# --------------------------------------------------------------------------- published weights
@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """torch's hub cache in a temporary folder, holding mobilenet_v3_small's weights under their
    published name (its own random initialisation: what is tested is the loading path)."""
    import torchvision.models as tvm

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.manual_seed(7)
    state = tvm.mobilenet_v3_small().state_dict()
    torch.save(state, folder / "mobilenet_v3_small-047dcff4.pth")
    return state


def test_torchvision_weights_from_the_hub_cache_offline(torch_home, tmp_path):
    config = Config(
        model="torchvision:mobilenet_v3_small",
        pretrained="default",
        input_size="32",
        download=False,
        train_size=40,
        epochs=1,
        max_batches=1,
    )
    built = build_model(config, (1, 8, 8), 10)
    inner = built.module.model.state_dict()  # type: ignore[union-attr]
    assert all(torch.equal(inner[k], v) for k, v in torch_home.items() if not k.startswith("classifier.3."))
    assert built.start is not None and built.start["new"] == ["classifier.3.weight", "classifier.3.bias"]
    notes = " ".join(built.notes)
    assert "grey images repeated to 3 channels" in notes and "resized from 8×8 to 32×32" in notes
    assert "mean (0.485, 0.456, 0.406)" in notes

    result = train(config, tmp_path / "run")
    saved = load_checkpoint(tmp_path / "run" / "best.pt")
    assert saved["format"] == 3 and saved["model_meta"]["input"]["size"] == [32, 32]
    model = load_model(tmp_path / "run")  # rebuilt from the checkpoint: no weights file read
    images = torch.rand(3, 1, 8, 8)
    result.model.eval()
    torch.testing.assert_close(model(images), result.model(images))


def test_timm_weights_from_a_local_file_through_pretrained_cfg_overlay(tmp_path):
    timm = pytest.importorskip("timm", reason="the timm extra is not installed")
    from safetensors.torch import save_file

    state = timm.create_model("test_resnet").state_dict()
    save_file(state, str(tmp_path / "w.safetensors"))
    config = Config(model="timm:test_resnet", pretrained=str(tmp_path / "w.safetensors"), input_size="native")
    built = build_model(config, (1, 8, 8), 10)
    inner = built.module.model.state_dict()  # type: ignore[union-attr]
    assert all(torch.equal(inner[k], v) for k, v in state.items() if not k.startswith("fc."))
    assert built.start is not None and built.start["new"] == ["fc.weight", "fc.bias"]
    assert "mean (0.500, 0.500, 0.500)" in " ".join(built.notes)


def test_a_checkpoint_of_format_2_still_loads(pretrained, tmp_path):
    checkpoint = load_checkpoint(pretrained / "best.pt")
    checkpoint["format"] = 2
    for key in ("input", "start"):
        checkpoint["model_meta"].pop(key)
    torch.save(checkpoint, tmp_path / "old.pt")
    images = torch.rand(2, 1, 8, 8)
    torch.testing.assert_close(load_model(tmp_path / "old.pt")(images), load_model(pretrained)(images))


# --------------------------------------------------------------------------- bad inputs
BAD = {
    "wrong file": (["--init", "notes.txt"], "is not a PyTorch weights file"),
    "other architecture": (["--init", "resnet.pth"], "another architecture"),
    "other class count": (["--classes", "0-9", "--init", "PRE", "--hidden", "8"], "add --reinit-head"),
    "no published weights": (["--pretrained"], "has no published weights"),
    "no recognisable head": (["--model", "allconv.py:allconv", "--freeze"], "no recognisable head"),
    "missing hub file": (
        ["--model", "torchvision:resnet18", "--pretrained", "--no-download"],
        "resnet18-f37072fd.pth",
    ),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_inputs_are_one_line_and_leave_nothing(case, run_cli, tmp_path, pretrained, monkeypatch):
    import torchvision.models as tvm

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-hub"))
    (tmp_path / "notes.txt").write_text("not weights")
    torch.save(tvm.resnet18().state_dict(), tmp_path / "resnet.pth")
    (tmp_path / "allconv.py").write_text(
        "from torch import nn\n"
        "def allconv(in_shape, num_classes):\n"
        "    layers = [nn.Conv2d(in_shape[0], num_classes, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()]\n"
        "    return nn.Sequential(*layers)\n"
    )
    flags, message = BAD[case]
    flags = [str(pretrained) if f == "PRE" else f for f in flags]
    done = run_cli("train", *flags, "--runs-dir", "runs", "--epochs", "1")
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and message in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------- the transfer study
def test_transfer_study_scratch_against_init_on_digits(pretrained, run_cli, tmp_path):
    """The README's transfer study, small: 60 images of digits 5-9, fine-tuned from 0-4."""
    spec = tmp_path / "transfer.toml"
    base = 'classes = "5-9"\ntrain_size = 60\nepochs = 15\nmodel = "seed-cnn"\nhidden = 8\n'
    base += 'batchnorm = false\ndropout = 0.0\nhead = "fc"\n'
    spec.write_text(
        f'seeds = 2\n[base]\n{base}[[variant]]\nname = "baseline"\ninit = "{pretrained}"\n'
        f'[[variant]]\nname = "scratch"\n[[variant]]\nname = "freeze"\ninit = "{pretrained}"\nfreeze = true\n'
    )
    done = run_cli("study", str(spec), "--runs-dir", "runs", "--name", "t", "--json", "--quiet", timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["complete"] == 6 and not result["failed"]
    folder = tmp_path / "runs" / "t"
    assert "\ninit =" not in (folder / "scratch-s0" / "config.toml").read_text()  # random weights
    assert "\ninit =" in (folder / "freeze-s0" / "config.toml").read_text()
    # The pretrained body knows digit strokes: after one epoch it is far ahead of random weights.
    first = {
        v: json.loads((folder / f"{v}-s0" / "history.json").read_text())["epochs"][0]
        for v in ("baseline", "scratch")
    }
    assert first["baseline"]["valid_acc"] > first["scratch"]["valid_acc"] + 0.1


def test_labels_refuses_classes_whose_numbering_its_list_would_lose():
    from overfitlab.labels.finder import find_label_issues

    with pytest.raises(OverfitlabError, match="drop --classes"):
        find_label_issues({"classes": "0-4"}, runs_dir=None)
