"""Seeds trained at once with vmap: each member is the run its seed would give, up to rounding."""

from __future__ import annotations

import pytest
import torch

from overfitlab.config import Config
from overfitlab.errors import OverfitlabError
from overfitlab.run import train
from overfitlab.stacking import train_seeds

COMPARED = ("train_loss", "train_acc", "valid_loss", "valid_acc", "train_penalty")


def _separate(config: Config, seed: int):
    return train(config.replace(seed=seed))


def test_each_member_follows_its_own_run():
    """Same initial weights, subset and batch order as the single run; penalties, AdamW's
    decoupled decay and the no-decay groups apply per member."""
    config = Config(train_size=120, epochs=3, hidden=4, threads=1, batchnorm=False, dropout=0.0,
                    l1=1e-4, l2=3e-4, optimizer="adamw", weight_decay=0.1)
    members = train_seeds(config, [0, 1, 2])
    assert [m.seed for m in members] == [0, 1, 2]
    for member in members:
        alone = _separate(config, member.seed)
        assert len(member.history) == len(alone.history) == 3
        for ours, theirs in zip(member.history.epochs, alone.history.epochs):
            for key in COMPARED:
                assert ours[key] == pytest.approx(theirs[key], abs=1e-5), key
        assert [(b["epoch"], b["batch"]) for b in member.history.batches] == \
            [(b["epoch"], b["batch"]) for b in alone.history.batches]
        assert [b["loss"] for b in member.history.batches] == \
            pytest.approx([b["loss"] for b in alone.history.batches], abs=1e-5)
        assert [b["acc"] for b in member.history.batches] == [b["acc"] for b in alone.history.batches]
        for (name, a), b in zip(member.model.state_dict().items(), alone.model.state_dict().values()):
            assert torch.allclose(a, b, atol=1e-5), name
    # Different seeds really are different runs.
    assert members[0].history[-1]["train_loss"] != members[1].history[-1]["train_loss"]


def test_batch_norm_members_train_as_their_runs():
    """With batch norm the conv biases before it get only rounding noise as gradient, which
    Adam scales up differently in each implementation; everything the loss sees agrees."""
    config = Config(train_size=120, epochs=2, hidden=4, threads=1, batchnorm=True, dropout=0.0)
    for member in train_seeds(config, [3, 4]):
        alone = _separate(config, member.seed)
        for ours, theirs in zip(member.history.epochs, alone.history.epochs):
            assert ours["train_loss"] == pytest.approx(theirs["train_loss"], abs=1e-4)
        ours, theirs = member.model.state_dict(), alone.model.state_dict()
        for name in ours:
            if name.endswith(("running_var", "num_batches_tracked")) or (name.endswith(".weight")):
                assert torch.allclose(ours[name].float(), theirs[name].float(), atol=1e-4), name


@pytest.mark.parametrize("flag, label", [("early_stopping", "early stopping"), ("augment", "augmentation"),
                                         ("normalize", "normalization")])
def test_what_stacking_cannot_do_is_refused_in_one_line(flag, label):
    with pytest.raises(OverfitlabError, match=f"cannot be trained stacked with {label}"):
        train_seeds(Config(train_size=120, epochs=1, hidden=4, threads=1, **{flag: True}), [0, 1])
    with pytest.raises(OverfitlabError, match="distinct seeds"):
        train_seeds(Config(train_size=120, epochs=1, hidden=4, threads=1), [1, 1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_members_on_cuda_follow_their_runs():
    config = Config(train_size=192, epochs=2, hidden=4, batchnorm=False, dropout=0.0, device="cuda")
    for member in train_seeds(config, [0, 1]):
        assert all(p.device.type == "cuda" for p in member.model.parameters())
        alone = _separate(config, member.seed)
        for ours, theirs in zip(member.history.epochs, alone.history.epochs):
            assert ours["valid_loss"] == pytest.approx(theirs["valid_loss"], abs=1e-3)
