"""FastDropout against nn.Dropout: the same Bernoulli law, the same scaling, seeded, exact gradients.

Statistical checks draw millions of elements and use bounds of 6 standard
deviations: a correct implementation fails one of them about once in 5·10⁸
runs, while an error in the keep rate as small as 0.1 % fails them for sure.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from overfitlab.models.fast_dropout import FastDropout, keep_mask, quantized_p

N = 1 << 22  # elements per statistical draw (4 194 304)
SIGMAS = 6.0


def keep_rate_bound(p: float, n: int) -> float:
    """6 binomial standard deviations of a keep rate over n elements."""
    return SIGMAS * math.sqrt(p * (1 - p) / n)


def fresh_input(shape=(N,), fill: float = 1.0) -> torch.Tensor:
    return torch.full(shape, fill)


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.9])
def test_keep_rate_matches_nn_dropout_within_binomial_bound(p):
    torch.manual_seed(0)
    x = fresh_input()
    fast = (FastDropout(p)(x) != 0).double().mean().item()
    torch_rate = (nn.Dropout(p)(x) != 0).double().mean().item()
    bound = keep_rate_bound(p, N)
    # Both draw from Bernoulli(1 - p); ours from 1 - p', with |p' - p| ≤ 2⁻¹⁷.
    assert abs(fast - (1 - p)) <= bound + abs(quantized_p(p) - p)
    assert abs(torch_rate - (1 - p)) <= bound
    assert abs(fast - torch_rate) <= 2 * bound + abs(quantized_p(p) - p)


def test_quantized_p_is_within_two_to_the_minus_17():
    for p in np.linspace(0, 0.99, 397):
        assert abs(quantized_p(float(p)) - p) <= 2.0**-17
    assert quantized_p(0.5) == 0.5  # an exact multiple of 2⁻¹⁶ is unchanged


@pytest.mark.parametrize("p", [0.1, 0.37])
def test_kept_values_are_exactly_x_over_one_minus_p(p):
    torch.manual_seed(1)
    x = torch.randn(64, 16, 28, 28)
    out = FastDropout(p)(x)
    kept = out != 0
    scale = np.float32(1.0 / (1.0 - quantized_p(p)))  # computed here in numpy, not by the module
    expected = (x.numpy() * scale)[kept.numpy()]
    assert np.array_equal(out[kept].numpy(), expected)
    assert torch.all(out[~kept] == 0)
    # nn.Dropout scales by 1/(1-p); ours by 1/(1-p'), the same to 2⁻¹⁷ relative.
    assert np.allclose(out[kept].numpy(), x.numpy()[kept.numpy()] / (1 - p), rtol=2e-5, atol=0)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_mean_is_preserved(p):
    torch.manual_seed(2)
    x = fresh_input(fill=2.5)
    mean = FastDropout(p)(x).double().mean().item()
    # out = 2.5 · B / (1 - p') with B ~ Bernoulli(1 - p'): mean 2.5, sd 2.5·√(p'/(1-p')/n).
    pq = quantized_p(p)
    assert abs(mean - 2.5) <= SIGMAS * 2.5 * math.sqrt(pq / (1 - pq) / N)


@pytest.mark.parametrize("lag", [1, 2, 3, 4, 5, 8, 28, 784])
def test_neighbouring_mask_bits_are_uncorrelated(lag):
    """Four masks share one 64-bit word: lags 1-3 are within a word, 4 and more across words."""
    torch.manual_seed(3)
    bits = (FastDropout(0.5)(fresh_input()) != 0).double().numpy()
    r = np.corrcoef(bits[:-lag], bits[lag:])[0, 1]
    # Under independence r is about normal with sd 1/√n.
    assert abs(r) <= SIGMAS / math.sqrt(N - lag)


def test_successive_calls_draw_fresh_masks():
    torch.manual_seed(4)
    layer = FastDropout(0.5)
    x = fresh_input((1 << 16,))
    first, second = layer(x) != 0, layer(x) != 0
    agreement = (first == second).double().mean().item()
    # Independent masks agree on half the elements.
    assert abs(agreement - 0.5) <= keep_rate_bound(0.5, x.numel())


def test_seeded_masks_are_reproducible_and_seed_dependent():
    x = torch.randn(32, 16, 28, 28)
    layer = FastDropout(0.2)
    torch.manual_seed(5)
    a = layer(x)
    torch.manual_seed(5)
    b = layer(x)
    torch.manual_seed(6)
    c = layer(x)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_the_default_generator_state_drives_the_masks():
    """Checkpoints save torch.get_rng_state(); restoring it must replay the same masks."""
    x = torch.randn(8, 4, 6, 6)
    layer = FastDropout(0.3)
    torch.manual_seed(7)
    layer(x)
    state = torch.get_rng_state()
    after = layer(x)
    torch.set_rng_state(state)
    assert torch.equal(layer(x), after)


def test_channels_last_input_gets_the_same_masks_and_keeps_its_layout():
    x = torch.randn(16, 8, 14, 14)
    layer = FastDropout(0.25)
    torch.manual_seed(8)
    contiguous = layer(x)
    torch.manual_seed(8)
    channels_last = layer(x.contiguous(memory_format=torch.channels_last))
    assert torch.equal(contiguous, channels_last)
    assert channels_last.is_contiguous(memory_format=torch.channels_last)


def test_eval_mode_and_p_zero_are_the_identity():
    x = torch.randn(4, 3, 5, 5)
    layer = FastDropout(0.5).eval()
    assert layer(x) is x
    assert FastDropout(0.0).train()(x) is x
    assert torch.equal(nn.Dropout(0.5).eval()(x), layer(x))


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_gradient_is_mask_times_scale(memory_format):
    torch.manual_seed(9)
    p = 0.3
    x = (torch.rand(16, 8, 10, 10) + 0.5).contiguous(memory_format=memory_format).requires_grad_()
    out = FastDropout(p)(x)
    grad_out = torch.randn_like(out)
    out.backward(grad_out)
    kept = (out != 0).float()  # x is never 0, so a zero output is a dropped element
    scale = np.float32(1.0 / (1.0 - quantized_p(p)))
    expected = grad_out.detach().numpy() * (kept.numpy() * scale)
    assert np.array_equal(x.grad.numpy(), expected)


def test_keep_mask_values_are_zero_or_the_scale():
    torch.manual_seed(10)
    mask = keep_mask(torch.Size([1000, 37]), 0.2, torch.device("cpu"))
    values = set(mask.unique().tolist())
    assert values == {0.0, float(np.float32(1 / (1 - quantized_p(0.2))))}


def test_tiny_p_keeps_everything_and_near_one_is_refused():
    x = torch.randn(1000)
    torch.manual_seed(11)
    assert torch.equal(FastDropout(1e-6)(x), x)  # rounds to 0 drops at 16 bits, scale exactly 1
    with pytest.raises(ValueError):
        FastDropout(1.0)
    with pytest.raises(ValueError):
        FastDropout(-0.1)
    with pytest.raises(ValueError):
        FastDropout(1 - 2.0**-18)  # rounds to p' = 1: every element would be dropped


def test_odd_sizes_use_a_partial_last_word():
    torch.manual_seed(12)
    x = torch.ones(5, 3)  # 15 elements: three full words and three of a fourth
    assert FastDropout(0.5)(x).shape == x.shape


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_keep_rate_and_scaling():
    torch.manual_seed(13)
    x = torch.ones(N, device="cuda")
    out = FastDropout(0.1)(x)
    kept = out != 0
    assert abs(kept.double().mean().item() - 0.9) <= keep_rate_bound(0.1, N)
    assert torch.allclose(out[kept], torch.full_like(out[kept], 1 / 0.9))
