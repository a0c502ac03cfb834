"""Seeds trained at once with vmap: each member is the run its seed would give, up to rounding."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from overfitlab import store
from overfitlab.config import Config, load_toml
from overfitlab.errors import OverfitlabError
from overfitlab.runs.checkpoint import load_model
from overfitlab.runs.stacking import refusals, train_seeds
from overfitlab.runs.train import resume, train

COMPARED = ("train_loss", "train_acc", "valid_loss", "valid_acc", "train_penalty")


def _separate(config: Config, seed: int):
    return train(config.replace(seed=seed))


def test_each_member_follows_its_own_run():
    """Same initial weights, subset and batch order as the single run; penalties, AdamW's
    decoupled decay and the no-decay groups apply per member."""
    config = Config(
        train_size=120,
        epochs=3,
        hidden=4,
        threads=1,
        batchnorm=False,
        dropout=0.0,
        l1=1e-4,
        l2=3e-4,
        optimizer="adamw",
        weight_decay=0.1,
    )
    members = train_seeds(config, [0, 1, 2])
    assert [m.config.seed for m in members] == [0, 1, 2]
    for member in members:
        alone = _separate(config, member.config.seed)
        assert len(member.history) == len(alone.history) == 3
        for ours, theirs in zip(member.history.epochs, alone.history.epochs, strict=True):
            for key in COMPARED:
                assert ours[key] == pytest.approx(theirs[key], abs=1e-5), key
        assert [(b["epoch"], b["batch"]) for b in member.history.batches] == [
            (b["epoch"], b["batch"]) for b in alone.history.batches
        ]
        assert [b["loss"] for b in member.history.batches] == pytest.approx(
            [b["loss"] for b in alone.history.batches], abs=1e-5
        )
        assert [b["acc"] for b in member.history.batches] == [b["acc"] for b in alone.history.batches]
        for (name, a), b in zip(
            member.model.state_dict().items(), alone.model.state_dict().values(), strict=True
        ):
            assert torch.allclose(a, b, atol=1e-5), name
    # Different seeds really are different runs.
    assert members[0].history[-1]["train_loss"] != members[1].history[-1]["train_loss"]


def test_batch_norm_members_train_as_their_runs():
    """With batch norm the conv biases before it get only rounding noise as gradient, which
    Adam scales up differently in each implementation; everything the loss sees agrees."""
    config = Config(train_size=120, epochs=2, hidden=4, threads=1, batchnorm=True, dropout=0.0)
    for member in train_seeds(config, [3, 4]):
        alone = _separate(config, member.config.seed)
        for ours, theirs in zip(member.history.epochs, alone.history.epochs, strict=True):
            assert ours["train_loss"] == pytest.approx(theirs["train_loss"], abs=1e-4)
        ours, theirs = member.model.state_dict(), alone.model.state_dict()
        for name in ours:
            if name.endswith(("running_var", "num_batches_tracked")) or (name.endswith(".weight")):
                assert torch.allclose(ours[name].float(), theirs[name].float(), atol=1e-4), name


@pytest.mark.parametrize("flag, label", [("augment", "augmentation"), ("normalize", "normalization")])
def test_what_stacking_cannot_do_is_refused_in_one_line(flag, label):
    with pytest.raises(OverfitlabError, match=f"cannot be trained stacked with {label}"):
        train_seeds(Config(train_size=120, epochs=1, hidden=4, threads=1, **{flag: True}), [0, 1])
    with pytest.raises(OverfitlabError, match="distinct seeds"):
        train_seeds(Config(train_size=120, epochs=1, hidden=4, threads=1), [1, 1])


def test_an_option_stacking_was_not_taught_is_refused_by_construction():
    """A remedy added to Config after stacking was written (a fake one here) is refused, not
    trained stacked without it; at its default it is no obstacle."""

    @dataclasses.dataclass(frozen=True)
    class WithNewRemedy(Config):
        new_remedy: float = dataclasses.field(
            default=0.0, metadata={"section": "regularization", "help": "a new remedy", "choices": None}
        )

    plain = WithNewRemedy(train_size=120, epochs=1, hidden=4, threads=1)
    assert refusals(plain) == []
    config = dataclasses.replace(plain, new_remedy=0.5)
    assert refusals(config) == ["--new-remedy"]
    with pytest.raises(OverfitlabError, match="cannot be trained stacked with --new-remedy"):
        train_seeds(config, [0, 1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_members_on_cuda_follow_their_runs():
    config = Config(train_size=192, epochs=2, hidden=4, batchnorm=False, dropout=0.0, device="cuda")
    for member in train_seeds(config, [0, 1]):
        assert all(p.device.type == "cuda" for p in member.model.parameters())
        alone = _separate(config, member.config.seed)
        for ours, theirs in zip(member.history.epochs, alone.history.epochs, strict=True):
            assert ours["valid_loss"] == pytest.approx(theirs["valid_loss"], abs=1e-3)


def test_members_write_ordinary_run_folders_that_resume_alone(tmp_path):
    """Each member's folder is its run's: the same files and numbers, and ``resume`` continues
    it with the optimizer state the stack left (a lost Adam state would change epoch 3)."""
    config = Config(train_size=120, epochs=2, hidden=4, threads=1, batchnorm=False, dropout=0.0)
    members = train_seeds(config, [5, 6], [tmp_path / "s5", tmp_path / "s6"])
    for member in members:
        seed = member.config.seed
        ours, alone = tmp_path / f"s{seed}", tmp_path / f"alone{seed}"
        train(config.replace(seed=seed, epochs=3), alone)
        assert {p.name for p in ours.iterdir()} == {p.name for p in alone.iterdir()}
        assert load_toml(ours / store.CONFIG).seed == seed
        summary = json.loads((ours / store.SUMMARY_JSON).read_text())
        assert summary["epochs_run"] == 2 and summary["stop_reason"] == "completed"
        assert summary["best_epoch"] == member.best_epoch
        losses = [e["valid_loss"] for e in member.history.epochs]
        assert member.best_epoch == losses.index(min(losses)) + 1
        best = load_model(ours).state_dict()
        same = all(torch.equal(best[k], v) for k, v in member.model.state_dict().items())
        assert same == (member.best_epoch == 2)  # best.pt holds the best epoch's weights
        continued = resume(ours, epochs=3)
        reference = json.loads((alone / store.HISTORY_JSON).read_text())["epochs"]
        assert len(continued.history) == 3
        for ours_epoch, theirs in zip(continued.history.epochs, reference, strict=True):
            for key in COMPARED:
                assert ours_epoch[key] == pytest.approx(theirs[key], abs=1e-5), (ours_epoch["epoch"], key)


def test_a_member_whose_loss_is_not_finite_ends_diverged(tmp_path):
    config = Config(train_size=120, epochs=3, hidden=4, threads=1, batchnorm=False, dropout=0.0, lr=1e12)
    members = train_seeds(config, [0, 1], [tmp_path / "a", tmp_path / "b"])
    for member, folder in zip(members, ("a", "b"), strict=True):
        assert member.stop_reason == "diverged"
        assert "training diverged" in member.stop_message
        summary = json.loads((tmp_path / folder / store.SUMMARY_JSON).read_text())
        assert summary["stop_reason"] == "diverged"
        losses = [e["train_loss"] for e in member.history.epochs]
        assert summary["epochs_run"] == len(losses)
        assert not math.isfinite(losses[-1]) and all(math.isfinite(x) for x in losses[:-1])


def test_each_member_stops_early_where_its_run_stops():
    config = Config(
        train_size=120,
        epochs=10,
        hidden=4,
        threads=1,
        batchnorm=False,
        dropout=0.0,
        lr=0.1,
        early_stopping=True,
        patience=1,
        restore_best=True,
    )
    members = train_seeds(config, [0, 1, 2, 3])
    stops = []
    for member in members:
        alone = _separate(config, member.config.seed)
        assert (member.stopped_epoch, member.best_epoch, member.stop_reason) == (
            alone.stopped_epoch,
            alone.best_epoch,
            alone.stop_reason,
        )
        assert [e["valid_loss"] for e in member.history.epochs] == pytest.approx(
            [e["valid_loss"] for e in alone.history.epochs], rel=1e-4
        )
        for a, b in zip(member.model.state_dict().values(), alone.model.state_dict().values(), strict=True):
            assert torch.allclose(a, b, atol=1e-4)  # the best epoch's weights, restored
        stops.append(member.stopped_epoch)
    assert len(set(stops)) > 1, stops  # members stopped at different epochs


def test_ctrl_c_leaves_each_member_a_folder_that_resumes(tmp_path, monkeypatch):
    from overfitlab.errors import Interrupted
    from overfitlab.runs import stacking

    calls = []
    evaluate = stacking._Stack.evaluate

    def interrupted_in_epoch_3(self, split):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return evaluate(self, split)

    monkeypatch.setattr(stacking._Stack, "evaluate", interrupted_in_epoch_3)
    config = Config(train_size=120, epochs=4, hidden=4, threads=1, batchnorm=False, dropout=0.0)
    with pytest.raises(Interrupted, match="after epoch 2"):
        train_seeds(config, [0, 1], [tmp_path / "a", tmp_path / "b"])
    monkeypatch.undo()
    for folder, seed in (("a", 0), ("b", 1)):
        summary = json.loads((tmp_path / folder / store.SUMMARY_JSON).read_text())
        assert (summary["stop_reason"], summary["epochs_run"]) == ("interrupted", 2)
        finished = resume(tmp_path / folder)
        alone = _separate(config, seed)
        assert [e["valid_loss"] for e in finished.history.epochs] == pytest.approx(
            [e["valid_loss"] for e in alone.history.epochs], abs=1e-5
        )
