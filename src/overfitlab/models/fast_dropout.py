"""Dropout whose masks cost far less to draw, with the same law as ``nn.Dropout``.

On a CPU, ``nn.Dropout`` spends most of its time drawing one random number per
element (``bernoulli_``), about a third of a training step of the tutorial's
CNN. Here one 64-bit random word gives four 16-bit uniforms, each compared with
a threshold: every element is kept independently with probability
1 - p' where p' = round(p·65536)/65536 (|p' - p| ≤ 2⁻¹⁷, 7.6e-6), and kept
elements are scaled by 1/(1 - p') so the expectation is unchanged, exactly as
``nn.Dropout`` does. Random numbers come from torch's default generator, so
``torch.manual_seed`` makes masks reproducible and checkpoints can save them.

Masks are drawn in logical (N, C, H, W) order whatever the memory layout, so a
channels_last run draws the same masks as a contiguous one. The 0/1 keep values
come from int16 arithmetic (clamp, subtract), not from a comparison: on CPU a
comparison that returns bool, and bool → float, cost about 7× an int16 op.
On other devices ``F.dropout`` is used: CUDA's dropout kernel is fused and
draws its own numbers (Philox), cheaper than anything built from tensor ops.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

_LEVELS = 1 << 16
_INT64_MIN = -(1 << 63)


def quantized_p(p: float) -> float:
    """The drop probability actually used: p rounded to a multiple of 2⁻¹⁶."""
    return round(p * _LEVELS) / _LEVELS


def keep_mask(
    shape: torch.Size,
    p: float,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> torch.Tensor:
    """A mask of 0 and 1/(1-p') values, each element kept with probability 1 - p'."""
    drops = round(p * _LEVELS)
    if not 0 <= drops < _LEVELS:
        raise ValueError(f"dropout probability must be in [0, 1 - 2⁻¹⁷), got {p}")
    scale = 1.0 / (1.0 - drops / _LEVELS)
    numel = math.prod(shape)
    words = torch.empty((numel + 3) // 4, dtype=torch.int64, device=device)
    words.random_(_INT64_MIN, None)  # every one of the 64 bits uniform
    uniforms = words.view(torch.int16)[:numel].view(shape)  # four signed 16-bit uniforms a word
    # Kept ⇔ uniform ≥ threshold, a share (65536 - drops)/65536. Clamping to
    # [threshold - 1, threshold] and subtracting threshold - 1 gives that 0/1 value.
    threshold = -(_LEVELS // 2) + drops
    if drops == 0:
        keep = uniforms.zero_().add_(1)
    else:
        keep = uniforms.clamp_(threshold - 1, threshold).sub_(threshold - 1)
    # The layout is changed on the int16 values, the cheapest place to do it.
    return keep.contiguous(memory_format=memory_format).to(dtype).mul_(scale)


def _layout(x: torch.Tensor) -> torch.memory_format:
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


class FastDropout(nn.Module):
    """Drop-in for ``nn.Dropout(p)`` (not in-place)."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        if round(p * _LEVELS) >= _LEVELS:
            raise ValueError(f"dropout probability {p} rounds to 1 at 16 bits: use p < 1 - 2⁻¹⁷")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, training=True)
        # The mask has x's layout: a product of mismatched layouts costs ~4× a matched one.
        return x * keep_mask(x.shape, self.p, x.device, x.dtype, _layout(x))

    def extra_repr(self) -> str:
        return f"p={self.p}"
