"""Any model by reference: torchvision, timm, a user's factory; load_model and evaluate exact."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from overfitlab.config import Config, load_toml
from overfitlab.errors import OverfitlabError
from overfitlab.history import History
from overfitlab.models.factory import build_model, factory_of
from overfitlab.runs.build import build_optimizer
from overfitlab.runs.checkpoint import load_model
from overfitlab.runs.evaluation import evaluate
from overfitlab.runs.train import train
from overfitlab.textvalues import parse_model_arg
from overfitlab.training.flat_adam import FlatAdam
from overfitlab.training.regularizers import param_groups

REPO = Path(__file__).parents[1]
MY_MODEL = REPO / "examples" / "my_model.py"

FACTORIES = '''
import torch
from torch import nn


def only_classes(num_classes):
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))


def everything(**kwargs):
    seen.update(kwargs)
    c, h, w = kwargs["in_shape"]
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, kwargs["num_classes"]))


seen = {}


def with_dropout_layer(in_shape, num_classes):
    c, h, w = in_shape
    return nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(c * h * w, 8), nn.Dropout(0.1),
                         nn.Linear(8, num_classes))


class Branchy(nn.Module):
    """A second head that forward never uses: its weights get no gradient."""

    def __init__(self, in_shape, num_classes):
        super().__init__()
        c, h, w = in_shape
        self.used = nn.Linear(c * h * w, num_classes)
        self.unused = nn.Linear(c * h * w, num_classes)

    def forward(self, x):
        return self.used(x.flatten(1))


def branchy(in_shape, num_classes):
    return Branchy(in_shape, num_classes)


def raises(in_shape, num_classes):
    raise ValueError("width must be even")


def not_a_module(in_shape, num_classes):
    return 42


def wrong_output(in_shape, num_classes):
    c, h, w = in_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, num_classes + 1))


def conv_only(in_shape, num_classes):
    c, h, w = in_shape
    return nn.Sequential(nn.Conv2d(c, num_classes, (h, w)), nn.Flatten())


NOT_CALLABLE = 3
'''


@pytest.fixture
def factories(tmp_path) -> Path:
    path = tmp_path / "factories.py"
    path.write_text(FACTORIES)
    return path


def test_torchvision_model_gets_its_first_convolution_adapted_to_grey_images():
    torchvision = pytest.importorskip("torchvision")
    built = build_model("torchvision:resnet18", (1, 8, 8), 10)
    reference = torchvision.models.resnet18(num_classes=10)
    # conv1 is 64×3×7×7 for RGB: one input channel instead of three removes 64·2·49 weights.
    expected = sum(p.numel() for p in reference.parameters()) - 64 * 2 * 49
    assert sum(p.numel() for p in built.module.parameters()) == expected
    assert built.module.conv1.in_channels == 1
    assert any("conv1" in note and "3 to 1" in note for note in built.notes)
    assert built.module(torch.zeros(3, 1, 8, 8)).shape == (3, 10)


def test_timm_model_is_timms_own():
    timm = pytest.importorskip("timm")
    built = build_model("timm:resnet10t", (1, 16, 16), 7)
    reference = timm.create_model("resnet10t", pretrained=False, num_classes=7, in_chans=1)
    assert [p.shape for p in built.module.parameters()] == [p.shape for p in reference.parameters()]


def test_unknown_torchvision_and_timm_names_list_close_matches():
    with pytest.raises(OverfitlabError, match="did you mean resnet18"):
        build_model("torchvision:resnet81", (3, 32, 32), 10)
    pytest.importorskip("timm")
    with pytest.raises(OverfitlabError, match="did you mean"):
        build_model("timm:resnet10", (3, 32, 32), 10)


def test_a_factory_gets_only_the_keywords_its_signature_takes(factories):
    built = build_model(f"{factories}:only_classes", (1, 8, 8), 5, remedies={})
    assert built.module(torch.zeros(2, 1, 8, 8)).shape == (2, 5)
    built = build_model(f"{factories}:everything", (1, 8, 8), 5, {"width": 3}, remedies={"dropout": 0.2})
    seen = factory_of(f"{factories}:everything").__globals__["seen"]
    assert seen == {"in_shape": (1, 8, 8), "num_classes": 5, "width": 3, "dropout": 0.2}
    with pytest.raises(OverfitlabError, match="takes no keyword 'width'.*it takes no keyword$"):
        build_model(f"{factories}:only_classes", (1, 8, 8), 5, {"width": 3})


def test_dropout_sets_every_dropout_layer_where_the_factory_takes_no_keyword(factories):
    built = build_model(f"{factories}:with_dropout_layer", (1, 8, 8), 4, remedies={"dropout": 0.3})
    assert [m.p for m in built.module.modules() if isinstance(m, nn.Dropout)] == [0.3, 0.3]
    assert "2 nn.Dropout" in built.notes[0]
    with pytest.raises(OverfitlabError, match="takes no 'batchnorm' keyword: add a batchnorm parameter"):
        build_model(f"{factories}:with_dropout_layer", (1, 8, 8), 4, remedies={"batchnorm": True})
    # No dropout layer (a ResNet): one goes before the classifier, the last linear layer.
    built = build_model(f"{factories}:only_classes", (1, 8, 8), 4, remedies={"dropout": 0.3})
    head = built.module[1]
    assert isinstance(head, nn.Sequential) and isinstance(head[0], nn.Dropout) and head[0].p == 0.3
    assert "inserted before the last linear layer, 1" in built.notes[0]
    with pytest.raises(OverfitlabError, match="has no nn.Dropout and no nn.Linear layer"):
        build_model(f"{factories}:conv_only", (1, 8, 8), 4, remedies={"dropout": 0.3})


def test_a_parameter_without_gradient_is_skipped_as_torch_adam_skips_it(factories):
    """A flat buffer would step the unused head on a zero gradient (plus its weight decay);
    torch's Adam skips a parameter whose grad is None, so the unused head keeps its initial
    weights, and every other parameter ends as torch's Adam leaves it, bit for bit."""
    config = Config(
        model=f"{factories}:branchy", train_size=64, epochs=2, weight_decay=0.1, early_stopping=False
    )
    torch.manual_seed(config.seed)
    initial = build_model(config.model, (1, 8, 8), 10).module.unused.weight.detach().clone()
    result = train(config)
    assert torch.equal(result.model.unused.weight.detach(), initial)
    assert not torch.equal(result.model.used.weight.detach(), initial)
    optimizer = build_optimizer(config, result.model)
    assert isinstance(optimizer, FlatAdam)
    # The same steps with torch's Adam on the same groups.
    torch.manual_seed(config.seed)
    model = build_model(config.model, (1, 8, 8), 10).module
    reference = torch.optim.Adam(param_groups(model, 0.1), lr=config.lr, foreach=True)
    flat_model = copy.deepcopy(model)
    flat = build_optimizer(config, flat_model)
    images, labels = torch.rand(16, 1, 8, 8), torch.randint(0, 10, (16,))
    for net, opt in ((model, reference), (flat_model, flat)):
        for _ in range(4):
            opt.zero_grad()
            F.cross_entropy(net(images), labels).backward()
            opt.step()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), flat_model.parameters(), strict=True))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("width=32", ("width", 32)),
        ("p=0.5", ("p", 0.5)),
        ("flag=true", ("flag", True)),
        ("sizes=[1, 2]", ("sizes", [1, 2])),
        ('name="a b"', ("name", "a b")),
        ("act=relu", ("act", "relu")),
        ("drop-rate=0.1", ("drop_rate", 0.1)),
    ],
)
def test_model_args_are_toml_literals(text, expected):
    assert parse_model_arg(text) == expected


@pytest.mark.parametrize("text", ["width", "=3", "1x=2", "x=[1, 2", "x="])
def test_bad_model_args_are_refused(text):
    with pytest.raises(OverfitlabError, match="--model-arg"):
        parse_model_arg(text)


def test_model_args_go_to_the_factory_and_into_config_toml(run_cli, tmp_path):
    # A relative model path in the command, an absolute one in config.toml (workers run elsewhere).
    ref = f"{MY_MODEL.relative_to(REPO)}:build"
    result = run_cli(
        "train",
        "--model",
        ref,
        "--model-arg",
        "width=4",
        "--dropout",
        "0.2",
        "--train-size",
        "64",
        "--epochs",
        "1",
        "--name",
        "mine",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--quiet",
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    config = load_toml(tmp_path / "runs" / "mine" / "config.toml")
    assert config.model == f"{MY_MODEL}:build"
    assert config.model_args == {"width": 4} and config.dropout == 0.2
    model = load_model(tmp_path / "runs" / "mine")
    assert model[0].out_channels == 4 and model[7].p == 0.2


def _runs(tmp_path, factories):
    """One run of each kind of model, and a --normalize run, on the digits."""
    kinds = {
        "builtin": Config(model="seed-gap", train_size=200, epochs=2),
        "normalize": Config(model="seed-cnn", train_size=200, epochs=2, normalize=True),
        "torchvision": Config(model="torchvision:resnet18", train_size=96, epochs=1, batch_size=48),
        "user": Config(model=f"{MY_MODEL}:build", train_size=200, epochs=3, dropout=0.2, early_stopping=True),
    }
    try:
        import timm  # noqa: F401

        kinds["timm"] = Config(model="timm:resnet10t", train_size=96, epochs=1, batch_size=48)
    except ImportError:
        pass
    return {name: train(config, tmp_path / name) for name, config in kinds.items()}


def test_load_model_and_evaluate_reproduce_each_runs_validation_numbers(tmp_path, factories, digits):
    for name in _runs(tmp_path, factories):
        history = History.from_dict(json.loads((tmp_path / name / "history.json").read_text()))
        for checkpoint in ("best", "last"):
            measured = evaluate(tmp_path / name, checkpoint=checkpoint)
            epoch = measured.epoch
            record = history.record_at(epoch)
            assert (measured.acc, measured.loss) == (record["valid_acc"], record["valid_loss"]), (
                name,
                checkpoint,
            )
        # load_model's module takes [0, 1] images, ToTensor's scale, whatever --normalize was.
        model = load_model(tmp_path / name)
        with torch.inference_mode():
            predicted = model(digits.valid.images.float() / 255).argmax(1)
        acc = float((predicted == digits.valid.labels).double().mean())
        best = history.record_at(evaluate(tmp_path / name).epoch)["valid_acc"]
        assert acc == pytest.approx(best, abs=1e-12), name


def test_a_format_1_checkpoint_of_a_normalize_run_still_loads_with_its_scaling(tmp_path, digits):
    train(Config(train_size=200, epochs=2, normalize=True), tmp_path / "run")
    path = tmp_path / "run" / "best.pt"
    checkpoint = torch.load(path, weights_only=True)
    new = load_model(path)
    checkpoint["format"] = 1
    checkpoint["model_meta"] = {k: checkpoint["model_meta"][k] for k in ("image_shape", "classes")}
    torch.save(checkpoint, path)
    old = load_model(path)
    x = digits.valid.images[:50].float() / 255
    with torch.inference_mode():
        assert torch.equal(old(x), new(x))
    assert old.mean == new.mean and old.std == new.std and 0 < new.mean < 1


def test_load_model_into_a_module_the_caller_built(tmp_path):
    import overfitlab.models as models

    train(Config(model="seed-fc", train_size=96, epochs=1), tmp_path / "run")
    mine = models.create_model("seed-fc", (1, 8, 8), 10, hidden=8)
    loaded = load_model(tmp_path / "run", model=mine)
    assert loaded is mine and not mine.training
    with pytest.raises(OverfitlabError, match="do not fit the model given"):
        load_model(tmp_path / "run", model=models.create_model("seed-fc", (1, 8, 8), 10, hidden=4))


def test_evaluate_on_another_compatible_data_set_and_refuses_another_shape(tmp_path, run_cli):
    train(Config(train_size=96, epochs=1), tmp_path / "run")
    result = run_cli("evaluate", str(tmp_path / "run"), "--json")
    assert result.returncode == 0, result.stderr
    measured = json.loads(result.stdout)
    assert measured["dataset"] == "digits" and measured["images"] == 450
    result = run_cli("evaluate", str(tmp_path / "run"), "--dataset", "cifar10", "--data-dir", str(tmp_path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


BAD_MODELS = [
    ("no_such_module_xyz:build", "cannot import module 'no_such_module_xyz'"),
    ("{f}:nope", "has no attribute 'nope'"),
    ("{f}:NOT_CALLABLE", "is a int, not a function"),
    ("{f}:raises", "raised ValueError: width must be even"),
    ("{f}:not_a_module", "returned a int, not an nn.Module"),
    ("{f}:wrong_output", "returns shape [2, 11] for a batch of 2, not [2, 10]"),
    ("{d}/missing.py:build", "not found"),
    ("torchvision:resnet81", "did you mean resnet18"),
    ("seed-cnm", "did you mean seed-cnn"),
]


@pytest.mark.parametrize(("ref", "message"), BAD_MODELS, ids=[m for m, _ in BAD_MODELS])
def test_bad_model_references_are_one_line_and_leave_no_folder(run_cli, tmp_path, factories, ref, message):
    ref = ref.format(f=factories, d=tmp_path)
    result = run_cli("train", "--model", ref, "--epochs", "1", "--name", "bad")
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "runs" / "bad").exists()


def test_bad_model_arg_from_the_command_line(run_cli, tmp_path):
    result = run_cli("train", "--model-arg", "width", "--epochs", "1")
    assert result.returncode == 2 and "bad --model-arg 'width'" in result.stderr
    result = run_cli("train", "--model-arg", "width=3", "--epochs", "1")
    assert result.returncode == 2 and "takes no keyword 'width'" in result.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
