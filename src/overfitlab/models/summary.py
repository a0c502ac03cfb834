"""Model summaries computed with torchinfo, printed as the tutorial's table.

``summarize`` returns a ``ModelSummary`` (nothing is printed); ``str()`` of it
is the per-layer table (type, output shape, parameters) followed by the totals,
sizes in MB and mult-adds. ``compare_heads`` puts the fc and gap heads side by
side with the head's share of all parameters.
"""

from __future__ import annotations

import dataclasses
import html
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn
from torchinfo import summary as torchinfo_summary

from ..errors import OverfitlabError
from ..viz.html import box, table
from .factory import build_model, create_model


@dataclass
class Layer:
    kind: str
    output_shape: tuple[int, ...]
    params: int


@dataclass
class ModelSummary:
    name: str
    input_shape: tuple[int, int, int]
    layers: list[Layer]
    total_params: int
    trainable_params: int
    mult_adds: int
    input_mb: float
    forward_backward_mb: float
    params_mb: float
    notes: tuple[str, ...] = ()  # what was adapted to build it (a first convolution, dropout)

    @property
    def non_trainable_params(self) -> int:
        return self.total_params - self.trainable_params

    @property
    def total_mb(self) -> float:
        return self.input_mb + self.forward_backward_mb + self.params_mb

    def __repr__(self) -> str:
        shape = "×".join(map(str, self.input_shape))
        return (
            f"ModelSummary({self.name!r} on {shape}: {self.total_params:,} params, {len(self.layers)} layers)"
        )

    def _repr_html_(self) -> str:
        return summary_html(self)

    def __str__(self) -> str:
        rule = "-" * 64
        shape = "×".join(map(str, self.input_shape))
        lines = [
            f"{self.name or 'model'} on {shape} inputs (channels × height × width)",
            *(f"note: {note}" for note in self.notes),
            rule,
            f"{'Layer (type)':>25}  {'Output Shape':>20}  {'Param #':>13}",
            "=" * 64,
        ]
        for index, layer in enumerate(self.layers, start=1):
            shape = "[" + ", ".join(["-1", *map(str, layer.output_shape[1:])]) + "]"
            lines.append(f"{layer.kind + '-' + str(index):>25}  {shape:>20}  {layer.params:>13,}")
        lines += [
            "=" * 64,
            f"Total params: {self.total_params:,}",
            f"Trainable params: {self.trainable_params:,}",
            f"Non-trainable params: {self.non_trainable_params:,}",
            f"Mult-adds: {self.mult_adds:,}",
            rule,
            f"Input size (MB): {self.input_mb:.2f}",
            f"Forward/backward pass size (MB): {self.forward_backward_mb:.2f}",
            f"Params size (MB): {self.params_mb:.2f}",
            f"Estimated Total Size (MB): {self.total_mb:.2f}",
            rule,
        ]
        return "\n".join(lines)


def summarize_model(model: nn.Module, input_shape: tuple[int, int, int], name: str = "") -> ModelSummary:
    """Summarize any module on one input of shape (C, H, W); the model's mode is restored by torchinfo."""
    try:
        stats = torchinfo_summary(
            model,
            input_size=(1, *input_shape),
            verbose=0,
            device="cpu",
            mode="eval",  # a batch of one: batch norm on a 1×1 map cannot run in train mode
            col_names=("output_size", "num_params", "mult_adds"),
        )
    except RuntimeError as err:
        raise OverfitlabError(f"input shape {input_shape} does not fit the model ({err})") from None
    layers = [
        Layer(info.class_name, tuple(info.output_size), info.num_params)
        for info in stats.summary_list
        if info.is_leaf_layer
    ]
    mb = 1024**2  # MiB, as torchsummary prints in the tutorial
    return ModelSummary(
        name=name,
        input_shape=input_shape,
        layers=layers,
        total_params=stats.total_params,
        trainable_params=stats.trainable_params,
        mult_adds=stats.total_mult_adds,
        input_mb=stats.total_input / mb,
        # torchsummary's rule, which the tutorial prints: every layer's output, kept for backward (×2).
        forward_backward_mb=2
        * sum(info.output_bytes for info in stats.summary_list if info.is_leaf_layer)
        / mb,
        params_mb=stats.total_param_bytes / mb,
    )


def summarize(
    name: str,
    input_shape: tuple[int, int, int] = (1, 28, 28),
    classes: int = 10,
    model_args: Mapping[str, Any] | None = None,
    **options: Any,
) -> ModelSummary:
    """Summary of any model by reference (``models.factory``): ``model_args`` as
    ``--model-arg``, ``options`` the CNN options (hidden, head, ...; None: the factory's)."""
    built = build_model(name, input_shape, classes, model_args, remedies=options)
    summary = summarize_model(built.module, input_shape, name)
    return dataclasses.replace(summary, notes=built.notes)


def head_params(model: nn.Module) -> int:
    classifier = model.classifier
    assert isinstance(classifier, nn.Module), "the CNN family's head is its classifier"
    return sum(p.numel() for p in classifier.parameters())


def compare_heads(
    name: str,
    heads: list[str],
    input_shape: tuple[int, int, int] = (1, 28, 28),
    classes: int = 10,
    **overrides: Any,
) -> str:
    """A table of total and head parameters, and the head's share, one column per head."""
    columns = []
    for head in heads:
        model = create_model(name, input_shape, classes, **{**overrides, "head": head})
        stats = summarize_model(model, input_shape, name)
        columns.append((head, stats.total_params, head_params(model), stats.mult_adds))
    label_width = 22
    lines = [
        f"{name} on input {tuple(input_shape)}",
        f"{'':<{label_width}}" + "".join(f"{head:>14}" for head, *_ in columns),
    ]
    lines.append(f"{'total params':<{label_width}}" + "".join(f"{t:>14,}" for _, t, _, _ in columns))
    lines.append(f"{'head params':<{label_width}}" + "".join(f"{h:>14,}" for _, _, h, _ in columns))
    lines.append(f"{'head share':<{label_width}}" + "".join(f"{h / t:>14.1%}" for _, t, h, _ in columns))
    lines.append(f"{'mult-adds':<{label_width}}" + "".join(f"{m:>14,}" for _, _, _, m in columns))
    return "\n".join(lines)


def summary_html(summary: ModelSummary) -> str:
    head = "<tr><th>layer</th><th>output shape</th><th>parameters</th></tr>"
    body = "".join(
        f"<tr><td>{html.escape(layer.kind)}-{number}</td>"
        f"<td>{html.escape(str(list(layer.output_shape[1:])))}</td><td>{layer.params:,}</td></tr>"
        for number, layer in enumerate(summary.layers, start=1)
    )
    shape = "×".join(map(str, summary.input_shape))
    totals = table(
        [
            ("input", shape),
            ("total params", summary.total_params),
            ("trainable params", summary.trainable_params),
            ("mult-adds", summary.mult_adds),
            ("estimated size (MB)", round(summary.total_mb, 2)),
        ]
    )
    return box(summary.name or "model", totals, f"<table>{head}{body}</table>")
