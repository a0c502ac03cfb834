"""The CNN family against the tutorial: parameter counts by hand, torchsummary's table, layer order."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from overfitlab import OverfitlabError
from overfitlab.models.cnn import build_cnn, model_spec, pool_before_relu
from overfitlab.models.factory import create_model
from overfitlab.models.fast_dropout import FastDropout
from overfitlab.models.registry import list_models, register_model
from overfitlab.models.summary import summarize

# The tutorial's torchsummary totals on 1×28×28 (CNN(hidden_dim=8), FCcnn, GAPcnn).
TUTORIAL_TOTALS = {"seed-cnn": 80_806, "seed-fc": 80_758, "seed-gap": 3_958}


def conv(k: int, cin: int, cout: int) -> int:
    return k * k * cin * cout + cout


def bn(c: int) -> int:
    return 2 * c


def linear(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def hand_count(name: str, in_shape=(1, 28, 28), classes: int = 10, **overrides) -> int:
    """Sum the layer formulas for any preset, walking the shapes by hand (3×3 'same' conv, 2×2 pool)."""
    spec = model_spec(name, **overrides)
    channels, height, width = in_shape
    total = 0
    for block in range(spec.blocks):
        out = spec.hidden * 2**block
        total += conv(3, channels, out) + (bn(out) if spec.batchnorm else 0)
        channels, height, width = out, height // 2, width // 2
    flat = channels if spec.head == "gap" else channels * height * width
    return total + linear(flat, spec.fc_width) + linear(spec.fc_width, classes)


def test_tutorial_totals_by_hand():
    # Written out layer by layer, as the tutorial's tables list them.
    assert (
        conv(3, 1, 8) + bn(8) + conv(3, 8, 16) + bn(16) + linear(7 * 7 * 16, 100) + linear(100, 10) == 80_806
    )
    assert conv(3, 1, 8) + conv(3, 8, 16) + linear(7 * 7 * 16, 100) + linear(100, 10) == 80_758
    assert conv(3, 1, 8) + conv(3, 8, 16) + linear(16, 100) + linear(100, 10) == 3_958


@pytest.mark.parametrize("name", list_models())
def test_parameter_count_matches_the_layer_formulas(name):
    model = create_model(name, hidden=8)
    count = sum(p.numel() for p in model.parameters())
    assert count == hand_count(name, hidden=8)
    if name in TUTORIAL_TOTALS:
        assert count == TUTORIAL_TOTALS[name]


def test_presets_of_the_tutorial_exist():
    assert set(TUTORIAL_TOTALS) <= set(list_models())


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize(
    "overrides", [{}, {"hidden": 16}, {"blocks": 3, "head": "gap"}, {"batchnorm": True, "fc_width": 32}]
)
def test_summary_totals_equal_the_model_parameters(name, overrides):
    stats = summarize(name, (1, 28, 28), 10, **overrides)
    model = create_model(name, (1, 28, 28), 10, **overrides)
    assert stats.total_params == sum(p.numel() for p in model.parameters())
    assert stats.trainable_params == stats.total_params == hand_count(name, **overrides)
    assert sum(layer.params for layer in stats.layers) == stats.total_params


# torchsummary's tables in the tutorial: (layer type, output shape without the batch, params).
TUTORIAL_TABLES = {
    "seed-cnn": [
        ("Conv2d", (8, 28, 28), 80),
        ("BatchNorm2d", (8, 28, 28), 16),
        ("ReLU", (8, 28, 28), 0),
        ("Dropout", (8, 28, 28), 0),
        ("MaxPool2d", (8, 14, 14), 0),
        ("Conv2d", (16, 14, 14), 1_168),
        ("BatchNorm2d", (16, 14, 14), 32),
        ("ReLU", (16, 14, 14), 0),
        ("Dropout", (16, 14, 14), 0),
        ("MaxPool2d", (16, 7, 7), 0),
        ("Linear", (100,), 78_500),
        ("ReLU", (100,), 0),
        ("Linear", (10,), 1_010),
    ],
    "seed-fc": [
        ("Conv2d", (8, 28, 28), 80),
        ("ReLU", (8, 28, 28), 0),
        ("MaxPool2d", (8, 14, 14), 0),
        ("Conv2d", (16, 14, 14), 1_168),
        ("ReLU", (16, 14, 14), 0),
        ("MaxPool2d", (16, 7, 7), 0),
        ("Linear", (100,), 78_500),
        ("ReLU", (100,), 0),
        ("Linear", (10,), 1_010),
    ],
    "seed-gap": [
        ("Conv2d", (8, 28, 28), 80),
        ("ReLU", (8, 28, 28), 0),
        ("MaxPool2d", (8, 14, 14), 0),
        ("Conv2d", (16, 14, 14), 1_168),
        ("ReLU", (16, 14, 14), 0),
        ("MaxPool2d", (16, 7, 7), 0),
        ("AdaptiveAvgPool2d", (16, 1, 1), 0),
        ("Linear", (100,), 1_700),
        ("ReLU", (100,), 0),
        ("Linear", (10,), 1_010),
    ],
}


@pytest.mark.parametrize("name", sorted(TUTORIAL_TABLES))
def test_per_layer_table_equals_the_tutorial(name):
    stats = summarize(name, (1, 28, 28), 10, hidden=8)
    table = [(layer.kind, tuple(layer.output_shape[1:]), layer.params) for layer in stats.layers]
    assert table == TUTORIAL_TABLES[name]
    text = str(stats)
    assert f"Total params: {TUTORIAL_TOTALS[name]:,}" in text
    assert "[-1, 16, 7, 7]" in text


@pytest.mark.parametrize("name", sorted(TUTORIAL_TABLES))
def test_forward_shapes_follow_the_table(name):
    """The same shapes by running the layers one by one, without torchinfo."""
    model = create_model(name).eval()
    x = torch.zeros(2, 1, 28, 28)
    shapes = []
    for layer in model.features:
        x = layer(x)
        shapes.append(tuple(x.shape[1:]))
    if hasattr(model, "gap"):
        x = model.gap(x)
        shapes.append(tuple(x.shape[1:]))
    x = x.flatten(1)
    for layer in model.classifier:
        x = layer(x)
        shapes.append(tuple(x.shape[1:]))
    assert shapes == [shape for _, shape, _ in TUTORIAL_TABLES[name]]
    assert torch.equal(model(torch.zeros(2, 1, 28, 28)), x)


def _literal_forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's layers in the order they are written, one by one."""
    for layer in model.features:
        x = layer(x)
    if hasattr(model, "gap"):
        x = model.gap(x)
    return model.classifier(x.flatten(1))


@pytest.mark.parametrize("name", ["seed-gap", "seed-fc"])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("whole_numbers", [False, True])
def test_pooling_before_relu_gives_the_same_outputs_and_gradients_bit_for_bit(
    name, memory_format, whole_numbers
):
    torch.manual_seed(0)
    model = create_model(name).to(memory_format=memory_format)
    x = torch.randn(8, 1, 28, 28)
    if whole_numbers:  # ties within a pooling window become common: where the order could matter
        x = x.mul(2).round()
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randint(-1, 2, p.shape))
    x = x.contiguous(memory_format=memory_format)
    results = []
    for forward in (model, lambda t: _literal_forward(model, t)):
        model.zero_grad(set_to_none=True)
        out = forward(x)
        out.square().sum().backward()
        results.append((out.detach(), [p.grad.clone() for p in model.parameters()]))
    (out, grads), (literal_out, literal_grads) = results
    assert torch.equal(out, literal_out)
    assert all(torch.equal(g, h) for g, h in zip(grads, literal_grads, strict=True))


def test_only_a_relu_directly_before_a_max_pool_moves_and_hooks_see_the_written_order():
    model = create_model("seed-gap")
    assert [type(m) for m in pool_before_relu(model.features)] == [nn.Conv2d, nn.MaxPool2d, nn.ReLU] * 2
    cnn = create_model("seed-cnn").features  # a dropout between them: the order is kept
    assert pool_before_relu(cnn) == list(cnn)
    seen = []
    relu = model.features[1]
    handle = relu.register_forward_hook(lambda module, args, out: seen.append(tuple(out.shape)))
    try:
        order = pool_before_relu(model.features)  # the observed block as written, the other moved
        assert [type(m) for m in order] == [
            nn.Conv2d,
            nn.ReLU,
            nn.MaxPool2d,
            nn.Conv2d,
            nn.MaxPool2d,
            nn.ReLU,
        ]
        model(torch.zeros(2, 1, 28, 28))
    finally:
        handle.remove()
    assert seen == [(2, 8, 28, 28)]  # the ReLU's declared output, before the pool


def test_block_order_is_conv_bn_relu_dropout_maxpool():
    kinds = [type(m) for m in create_model("seed-cnn", blocks=3).features]
    assert kinds == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Dropout, nn.MaxPool2d] * 3
    fast = [type(m) for m in create_model("seed-cnn", dropout_impl="fast").features]
    assert fast == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, FastDropout, nn.MaxPool2d] * 2
    # Dropout 0 and no batch norm leave those layers out, as the tutorial's FCcnn.
    plain = [type(m) for m in create_model("seed-cnn", batchnorm=False, dropout=0.0).features]
    assert plain == [nn.Conv2d, nn.ReLU, nn.MaxPool2d] * 2


def test_tutorial_cnn_settings():
    model = create_model("seed-cnn")
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding) for c in convs] == [
        (1, 8, (3, 3), (1, 1), (1, 1)),
        (8, 16, (3, 3), (1, 1), (1, 1)),
    ]
    assert [m.p for m in model.features if isinstance(m, nn.Dropout)] == [0.1, 0.1]
    pools = [m for m in model.features if isinstance(m, nn.MaxPool2d)]
    assert all(p.kernel_size == 2 and p.stride == 2 for p in pools)


@pytest.mark.parametrize("in_shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
@pytest.mark.parametrize("name", ["seed-cnn", "seed-gap"])
def test_builder_takes_the_input_shape(name, in_shape):
    model = create_model(name, in_shape=in_shape, classes=10).eval()
    out = model(torch.rand(3, *in_shape))
    assert out.shape == (3, 10)
    assert sum(p.numel() for p in model.parameters()) == hand_count(name, in_shape)


def test_digits_and_cifar_counts_by_hand():
    # 8×8 → 4×4 → 2×2: the FC head sees 16·2·2 = 64 inputs.
    assert sum(p.numel() for p in create_model("seed-fc", (1, 8, 8)).parameters()) == (
        conv(3, 1, 8) + conv(3, 8, 16) + linear(64, 100) + linear(100, 10)
    )
    # 3×32×32 → 16·8·8 = 1024 inputs.
    assert sum(p.numel() for p in create_model("seed-cnn", (3, 32, 32)).parameters()) == (
        conv(3, 3, 8) + bn(8) + conv(3, 8, 16) + bn(16) + linear(1024, 100) + linear(100, 10)
    )


def test_none_overrides_keep_the_preset():
    spec = model_spec("seed-cnn", hidden=None, dropout=None, batchnorm=None)
    assert spec == model_spec("seed-cnn")
    assert model_spec("seed-fc", hidden=16).hidden == 16


def test_bad_model_names_and_shapes_are_user_errors():
    with pytest.raises(OverfitlabError, match="seed-cnn"):
        create_model("resnet-9000")
    with pytest.raises(OverfitlabError, match="--blocks"):
        create_model("seed-cnn", in_shape=(1, 8, 8), blocks=4)
    with pytest.raises(ValueError, match="twice"):
        register_model("seed-cnn")(lambda: model_spec("seed-cnn"))


def test_build_cnn_from_a_spec():
    spec = model_spec("seed-gap", hidden=4, blocks=1, fc_width=7)
    model = build_cnn(spec, (2, 10, 10), classes=3)
    assert model(torch.rand(5, 2, 10, 10)).shape == (5, 3)
    assert sum(p.numel() for p in model.parameters()) == conv(3, 2, 4) + linear(4, 7) + linear(7, 3)
