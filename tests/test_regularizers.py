"""Penalties against autograd, decay groups against a hand-made list, L2 vs weight decay, max-norm."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from overfitlab import Config, train
from overfitlab.models.factory import create_model
from overfitlab.training.regularizers import (
    apply_max_norm,
    l1_penalty,
    l2_penalty,
    param_groups,
    penalized_parameters,
)


def random_weights(seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    shapes = [(8, 1, 3, 3), (16, 8, 3, 3), (100, 64), (100,), (10, 100)]
    params = [torch.randn(shape, generator=generator).requires_grad_() for shape in shapes]
    with torch.no_grad():
        params[0][0, 0, 0, 0] = 0.0  # sign(0) = 0: the subgradient autograd takes
    return params


# ---------------------------------------------------------------- penalties
@pytest.mark.parametrize("lam", [1e-4, 0.3])
def test_l1_penalty_value_and_gradient_is_lambda_sign(lam):
    params = random_weights()
    penalty = l1_penalty(params, lam)
    expected = lam * sum(float(p.detach().double().abs().sum()) for p in params)
    assert float(penalty.detach()) == pytest.approx(expected, rel=1e-6)
    penalty.backward()
    for p in params:
        torch.testing.assert_close(p.grad, lam * torch.sign(p.detach()), rtol=1e-6, atol=0)
    assert params[0].grad[0, 0, 0, 0] == 0


@pytest.mark.parametrize("lam", [1e-4, 0.3])
def test_l2_penalty_value_and_gradient_is_two_lambda_w(lam):
    params = random_weights(1)
    penalty = l2_penalty(params, lam)
    expected = lam * sum(float(p.detach().double().pow(2).sum()) for p in params)
    assert float(penalty.detach()) == pytest.approx(expected, rel=1e-6)
    penalty.backward()
    for p in params:
        torch.testing.assert_close(p.grad, 2 * lam * p.detach(), rtol=1e-6, atol=0)


# ---------------------------------------------------------------- which tensors are decayed
def hand_made_groups(model: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """By module type: conv/linear weights decayed; their biases and every norm parameter not."""
    decay, no_decay = [], []
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            decay.append(module.weight)
            no_decay.append(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            no_decay += [module.weight, module.bias]
    return decay, no_decay


def ids(tensors) -> set[int]:
    return {id(t) for t in tensors}


@pytest.mark.parametrize("name", ["seed-cnn", "seed-fc", "seed-gap"])
def test_param_groups_split_weights_from_biases_and_norm_parameters(name):
    model = create_model(name)
    decay, no_decay = hand_made_groups(model)
    assert len(decay) + len(no_decay) == len(list(model.parameters()))
    groups = param_groups(model, weight_decay=0.05)
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0]
    assert ids(groups[0]["params"]) == ids(decay)
    assert ids(groups[1]["params"]) == ids(no_decay)
    assert ids(penalized_parameters(model)) == ids(decay)
    if name == "seed-cnn":  # four BN tensors among the no-decay ones
        assert sum(p.dim() == 1 for p in no_decay) == 4 + 4


def test_include_all_decays_every_parameter():
    model = create_model("seed-cnn")
    everything = ids(model.parameters())
    groups = [g for g in param_groups(model, 0.05, include_all=True) if g["params"]]
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.05
    assert ids(groups[0]["params"]) == everything
    assert ids(penalized_parameters(model, include_all=True)) == everything


# ---------------------------------------------------------------- L2 in the loss vs weight decay
BASE = dict(
    train_size=160, epochs=2, batch_size=32, batchnorm=False, dropout=0.0, threads=1, device="cpu", seed=3
)  # 5 steps an epoch, the same batches in every run
LAM = 0.01


def final_weights(**changes) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in train(Config(**BASE, **changes)).model.state_dict().items()}


def max_difference(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.fixture(scope="module")
def sgd_runs():
    sgd = dict(optimizer="sgd", momentum=0.0, lr=0.05)
    return (final_weights(**sgd, l2=LAM), final_weights(**sgd, weight_decay=2 * LAM), final_weights(**sgd))


def test_l2_in_loss_with_plain_sgd_equals_sgd_weight_decay_two_lambda(sgd_runs):
    in_loss, decayed, plain = sgd_runs
    assert max_difference(in_loss, decayed) < 1e-6
    # ... and the decay did something far larger than that tolerance.
    assert max_difference(in_loss, plain) > 1e-4


@pytest.fixture(scope="module")
def adam_runs():
    adam = dict(lr=0.01)
    return (
        final_weights(optimizer="adam", l2=LAM, **adam),
        final_weights(optimizer="adam", weight_decay=2 * LAM, **adam),
        final_weights(optimizer="adamw", weight_decay=2 * LAM, **adam),
    )


def test_adam_coupled_weight_decay_two_lambda_equals_l2_lambda_in_loss(adam_runs):
    in_loss, coupled, _ = adam_runs
    assert max_difference(in_loss, coupled) < 1e-5


def test_adamw_decoupled_decay_differs_from_adam_with_l2(adam_runs):
    in_loss, _, decoupled = adam_runs
    assert max_difference(in_loss, decoupled) > 1e-3


# ---------------------------------------------------------------- max-norm
def unit_norms(weight: torch.Tensor) -> torch.Tensor:
    return weight.detach().double().flatten(1).norm(dim=1)


@pytest.mark.parametrize("max_norm", [1.5714285714285714, 0.8, 3.0])
def test_max_norm_bounds_every_unit_and_leaves_small_units_alone(max_norm):
    torch.manual_seed(0)
    model = create_model("seed-cnn", hidden=4)
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():  # give each unit a norm drawn in [0, 2C]: about half over the bound
        for layer in layers:
            w = layer.weight
            target = torch.rand(w.shape[0]) * 2 * max_norm
            w.mul_((target / w.flatten(1).norm(dim=1)).view(-1, *[1] * (w.dim() - 1)))
    before = {id(layer): layer.weight.detach().clone() for layer in layers}
    biases = {id(layer): layer.bias.detach().clone() for layer in layers}
    apply_max_norm(model, max_norm)
    over_seen = under_seen = 0
    for layer in layers:
        old, new = before[id(layer)], layer.weight.detach()
        old_norms = old.flatten(1).norm(dim=1)
        assert (unit_norms(new) <= max_norm * (1 + 1e-6)).all()
        under = old_norms <= max_norm
        assert torch.equal(new[under], old[under])  # bit for bit
        over = ~under
        # Rescaled units keep their direction and end on the bound.
        torch.testing.assert_close(
            unit_norms(new[over]),
            torch.full((int(over.sum()),), max_norm, dtype=torch.float64),
            rtol=1e-6,
            atol=0,
        )
        cos = torch.nn.functional.cosine_similarity(new[over].flatten(1), old[over].flatten(1), dim=1)
        assert (cos > 1 - 1e-6).all()
        assert torch.equal(layer.bias.detach(), biases[id(layer)])
        over_seen += int(over.sum())
        under_seen += int(under.sum())
    assert over_seen > 5 and under_seen > 5
