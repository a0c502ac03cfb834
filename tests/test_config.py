"""Config: TOML round trip, unknown keys, type checks, and a helpful error for every bad value."""

from __future__ import annotations

import dataclasses
import math
import re

import pytest

from overfitlab import Config, OverfitlabError, load_toml, to_toml, train
from overfitlab.config import FIELDS, apply_overrides, from_dict, to_dict

# Every field away from its default (and valid), so a field that to_toml forgets, or puts
# in the wrong section, breaks the round trip.
EVERYTHING_CHANGED = dict(
    dataset="mnist",
    data_dir='/data/"odd" dir\\with\ttab\nand newline é',
    download=False,
    channels=3,
    image_size="32,28",
    valid_fraction=0.25,
    cache=False,
    train_size=300,
    label_noise=0.2,
    classes="5-9",
    augment=True,
    normalize=True,
    batch_size=64,
    valid_batch_size=500,
    model="seed-fc",
    model_args={"width": 3, "act": 're"lu', "sizes": [1, 2], "flag": True, "drop_rate": 0.5},
    hidden=16,
    blocks=3,
    batchnorm=True,
    dropout=0.25,
    head="gap",
    fc_width=50,
    pretrained="IMAGENET1K_V1",
    init="runs/pretrained/best.pt",
    input_size="64",
    freeze=True,
    freeze_epochs=2,
    unfreeze_every=1,
    body_lr_ratio=0.1,
    reinit_head=True,
    l2_sp=1e-3,
    optimizer="sgd",
    lr=0.1 + 0.2,
    momentum=0.5,
    nesterov=True,
    epochs=7,
    label_smoothing=0.1,
    l1=1e-5,
    l2=3e-4,
    weight_decay=1e-20,
    penalize_all=True,
    max_norm=3.0,
    early_stopping=True,
    monitor="valid_acc",
    mode="max",
    patience=0,
    min_delta=0.001,
    min_delta_mode="rel",
    baseline=-0.5,
    start_from_epoch=2,
    restore_best=False,
    check_finite=False,
    stopping_threshold=0.99,
    divergence_threshold=0.05,
    seed=123,
    device="cpu",
    threads=1,
    dropout_impl="torch",
    memory_format="channels_last",
    max_batches=5,
    mlflow_uri='sqlite:///tmp/a "quoted" store.db',
    exclude="/tmp/label issues.csv",
    relabel='/tmp/a "quoted" list.csv',
    bf16=True,
    compile=True,
)


def test_everything_changed_covers_every_field_with_a_new_value():
    assert set(EVERYTHING_CHANGED) == set(FIELDS)
    default = Config()
    assert all(getattr(default, k) != v for k, v in EVERYTHING_CHANGED.items())


@pytest.mark.parametrize(
    "config",
    [Config(), Config(**EVERYTHING_CHANGED), Config(lr=1e-7, baseline=0.0, train_size=1, l2=float("1e300"))],
    ids=["default", "everything", "extremes"],
)
def test_toml_round_trip(config, tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(to_toml(config), encoding="utf-8")
    loaded = load_toml(path)
    assert loaded == config
    assert all(type(getattr(loaded, k)) is type(getattr(config, k)) for k in FIELDS)


def test_toml_has_the_sections_and_omits_none():
    text = to_toml(Config())
    assert re.findall(r"^\[(\w+)\]$", text, re.M) == [
        "data",
        "model",
        "finetune",
        "optim",
        "regularization",
        "early_stopping",
        "run",
    ]
    assert "hidden" not in text and "data_dir" not in text  # None: the preset's or default value
    assert "lr = 0.01" in text


def test_flat_toml_keys_and_int_for_float(tmp_path):
    path = tmp_path / "flat.toml"
    path.write_text("lr = 1\ndropout = 0\ntrain-size = 200\n[early_stopping]\npatience = 2\n")
    config = load_toml(path)
    assert config == Config(lr=1.0, dropout=0.0, train_size=200, patience=2)
    assert type(config.lr) is float


def test_dict_round_trip():
    config = Config(**EVERYTHING_CHANGED)
    assert from_dict(to_dict(config)) == config
    assert from_dict({"lr": 0.5, "hidden": None}) == Config(lr=0.5)


# ---------------------------------------------------------------- unknown keys
def test_unknown_key_names_the_close_matches_not_every_key(tmp_path):
    path = tmp_path / "typo.toml"
    path.write_text("dropuot = 0.1\n")
    with pytest.raises(OverfitlabError) as err:
        load_toml(path)
    message = str(err.value)
    assert "'dropuot'" in message and str(path) in message
    assert "did you mean dropout" in message
    assert sum(name in message.split() for name in FIELDS) < 5
    assert "\n" not in message


def test_key_in_the_wrong_section_says_where_it_belongs(tmp_path):
    path = tmp_path / "section.toml"
    path.write_text("[optim]\ndropout = 0.1\n")
    with pytest.raises(OverfitlabError, match=r"'dropout' in \[optim\] of .* belongs in \[model\]"):
        load_toml(path)


def test_unknown_override_names_what_was_meant():
    with pytest.raises(OverfitlabError, match=r"unknown key 'learning_rate' in overrides: did you mean lr\?"):
        apply_overrides(Config(), {"learning_rate": 0.1})


# ---------------------------------------------------------------- types
@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("epochs", "ten", "epochs must be int"),
        ("epochs", 2.5, "epochs must be int"),
        ("epochs", True, "epochs must be int"),
        ("lr", "0.1", "lr must be float"),
        ("lr", True, "lr must be float"),
        ("augment", 1, "augment must be bool"),
        ("dataset", 3, "dataset must be str"),
        ("hidden", "8", "hidden must be int or omitted"),
        ("lr", None, "lr must be float"),
    ],
)
def test_wrong_types_are_named(key, value, expected):
    with pytest.raises(OverfitlabError, match=re.escape(expected)):
        apply_overrides(Config(), {key: value})


def test_wrong_type_in_toml(tmp_path):
    path = tmp_path / "types.toml"
    path.write_text('[optim]\nepochs = "ten"\n')
    with pytest.raises(OverfitlabError, match="epochs must be int, got 'ten'"):
        load_toml(path)


def test_unreadable_toml_files(tmp_path):
    with pytest.raises(OverfitlabError, match="not found"):
        load_toml(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("lr = = 0.1\n")
    with pytest.raises(OverfitlabError, match="not valid TOML"):
        load_toml(bad)


# ---------------------------------------------------------------- ranges and names
BAD_VALUES = [
    # (field, value, fragments the message must hold)
    ("dropout", 1.0, ["dropout", "[0, 1)", "1.0"]),
    ("dropout", 1.5, ["dropout", "[0, 1)"]),
    ("dropout", -0.1, ["dropout", "[0, 1)"]),
    ("lr", 0.0, ["lr", "> 0"]),
    ("lr", -1.0, ["lr", "> 0", "-1.0"]),
    ("lr", math.nan, ["lr", "> 0"]),
    ("lr", math.inf, ["lr", "> 0"]),
    ("patience", -1, ["patience", "≥ 0", "-1"]),
    ("start_from_epoch", -2, ["start_from_epoch", "≥ 0"]),
    ("label_noise", 1.5, ["label_noise", "[0, 1]"]),
    ("label_noise", -0.1, ["label_noise", "[0, 1]"]),
    ("label_smoothing", 1.0, ["label_smoothing", "[0, 1)"]),
    ("batch_size", 0, ["batch_size", "> 0"]),
    ("epochs", 0, ["epochs", "> 0"]),
    ("hidden", 0, ["hidden", "> 0"]),
    ("train_size", 0, ["train_size", "> 0"]),
    ("threads", 0, ["threads", "> 0"]),
    ("max_norm", 0.0, ["max_norm", "> 0"]),
    ("momentum", -0.5, ["momentum", "≥ 0"]),
    ("l1", -1.0, ["l1", "≥ 0"]),
    ("l2", -1.0, ["l2", "≥ 0"]),
    ("weight_decay", -1.0, ["weight_decay", "≥ 0"]),
    ("dataset", "imagenet", ["unknown dataset 'imagenet'", "digits", "mnist", "cifar10"]),
    ("model", "resnet", ["unknown model 'resnet'", "seed-cnn", "seed-fc", "seed-gap"]),
    ("optimizer", "rmsprop", ["unknown optimizer 'rmsprop'", "adam", "adamw", "sgd"]),
    ("head", "attention", ["unknown head 'attention'", "fc", "gap"]),
    ("device", "tpu", ["unknown device 'tpu'", "cpu"]),
    ("mode", "best", ["unknown mode 'best'", "min", "max"]),
]


@pytest.mark.parametrize("key, value, fragments", BAD_VALUES, ids=[f"{k}={v}" for k, v, _ in BAD_VALUES])
def test_out_of_range_values_raise_a_helpful_error(key, value, fragments, tmp_path):
    with pytest.raises(OverfitlabError) as err:
        apply_overrides(Config(), {key: value})
    message = str(err.value)
    assert all(fragment in message for fragment in fragments), message
    assert "\n" not in message
    with pytest.raises(OverfitlabError):
        Config().replace(**{key: value})


@pytest.mark.parametrize(
    "key, value",
    [
        ("dropout", 1.0),
        ("lr", 0.0),
        ("patience", -1),
        ("label_noise", 2.0),
        ("optimizer", "rmsprop"),
        ("model", "resnet"),
        ("head", "attention"),
    ],
)
def test_train_rejects_a_bad_config_before_training(key, value, tmp_path):
    """A Config built directly is checked when a run starts, and nothing is written."""
    config = dataclasses.replace(Config(train_size=64, epochs=1, threads=1), **{key: value})
    with pytest.raises(OverfitlabError, match=key if key != "label_noise" else "label_noise"):
        train(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_train_size_larger_than_the_data(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()  # as `overfitlab train` makes it
    with pytest.raises(
        OverfitlabError,
        match=r"train size 100000 is larger than the 1347 training "
        r"images: pass at most 1347",
    ):
        train(Config(train_size=100_000, epochs=1, threads=1), run_dir)
    assert list(run_dir.iterdir()) == []  # so the same --name can be used again


def test_boundary_values_are_accepted():
    config = apply_overrides(
        Config(),
        {
            "dropout": 0.0,
            "label_noise": 1.0,
            "patience": 0,
            "momentum": 0.0,
            "lr": 1e-12,
            "label_smoothing": 0.0,
        },
    )
    assert (config.dropout, config.label_noise, config.patience) == (0.0, 1.0, 0)
    assert apply_overrides(Config(), {"dropout": 0.999}).dropout == 0.999
