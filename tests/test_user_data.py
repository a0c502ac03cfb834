"""Any image data: image folders (decoded once, cached, memory-mapped), .npz arrays, Python data sets."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_image_folder

from overfitlab.config import Config
from overfitlab.data import folders
from overfitlab.data.dataset import DataSet
from overfitlab.data.registry import load_dataset, register_dataset
from overfitlab.data.split import DataOptions, Split
from overfitlab.errors import OverfitlabError
from overfitlab.runs.train import train
from overfitlab.studies.loop import run_study
from overfitlab.studies.spec import make_spec


def by_class(split: Split) -> Split:
    """The split in a folder's order: by class, then by index (stable)."""
    order = torch.argsort(split.labels, stable=True)
    return Split(split.images[order], split.labels[order])


@pytest.fixture(scope="module")
def digits_folder(tmp_path_factory, digits):
    root = tmp_path_factory.mktemp("folder") / "digits"
    return write_image_folder(root, {"train": digits.train, "valid": digits.valid})


def test_a_train_valid_folder_holds_the_same_bytes_in_the_folders_order(digits_folder, digits):
    data = load_dataset(f"folder:{digits_folder}")
    for got, source in ((data.train, digits.train), (data.valid, digits.valid)):
        expected = by_class(source)
        assert torch.equal(got.images, expected.images) and torch.equal(got.labels, expected.labels)
    assert data.class_names == tuple(f"c{i}" for i in range(10)) and data.classes == 10


def test_a_test_folder_beside_valid_is_a_test_split_and_alone_it_validates(tmp_path, digits):
    """train/ + valid/ + test/: test/ is a split no run sees (the diagnosis judges on it);
    train/ + test/: test/ is the validation split, as before. Cached and uncached agree."""
    from overfitlab.diagnosis.experiments import carve_test

    third = Split(digits.valid.images[:60], digits.valid.labels[:60])
    root = write_image_folder(
        tmp_path / "three", {"train": digits.train, "valid": digits.valid, "test": third}
    )
    for cache in (True, False):
        data = load_dataset(f"folder:{root}", options=DataOptions(cache=cache))
        assert data.test is not None
        assert torch.equal(data.test.images, by_class(third).images)
        assert torch.equal(data.valid.labels, by_class(digits.valid).labels)
    held = carve_test(data)
    assert held.test is data.test and held.data.train is data.train and held.data.test is None
    assert "own test split (60 images)" in held.source
    two = write_image_folder(tmp_path / "two", {"train": digits.train, "test": third})
    data = load_dataset(f"folder:{two}")
    assert data.test is None and torch.equal(data.valid.images, by_class(third).images)
    held = carve_test(data)  # no test split of its own: a share of the training images
    assert len(held.test) + len(held.data.train) == len(data.train) and "20%" in held.source


def test_an_npz_with_valid_and_test_arrays_keeps_both(tmp_path, digits):
    path = tmp_path / "d.npz"
    x, y = digits.valid.images.numpy(), digits.valid.labels.numpy()
    np.savez(
        path,
        x_train=digits.train.images.numpy(),
        y_train=digits.train.labels.numpy(),
        x_valid=x[:200],
        y_valid=y[:200],
        x_test=x[200:],
        y_test=y[200:],
    )
    data = load_dataset(f"arrays:{path}")
    assert torch.equal(data.valid.images, digits.valid.images[:200])
    assert torch.equal(data.test.images, digits.valid.images[200:])
    assert torch.equal(data.test.labels, digits.valid.labels[200:])
    from overfitlab.data.dataset import save_arrays

    save_arrays(data, tmp_path / "folder")  # the round trip keeps the test split
    again = load_dataset(f"arrays:{tmp_path / 'folder'}")
    assert torch.equal(again.test.images, data.test.images)


def test_the_cache_is_memory_mapped_read_without_decoding_and_renewed_when_a_file_changes(
    tmp_path, digits, monkeypatch
):
    monkeypatch.setenv("OVERFITLAB_CACHE_DIR", str(tmp_path / "cache"))
    real = folders.decode
    root = write_image_folder(tmp_path / "f", {"train": digits.train, "valid": digits.valid})
    first = load_dataset(f"folder:{root}")
    cached = list(folders.cache_dir().glob("*.npy"))
    assert len(cached) == 1, "the decoded images are stored, once"

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(folders, "decode", no_decoding)
    again = load_dataset(f"folder:{root}")
    assert torch.equal(again.train.images, first.train.images)
    # The split is a view of one copy-on-write map of the cache file, not a copy in memory.
    assert _mapped_from(again.train.images.data_ptr()) == str(cached[0])
    assert _mapped_from(again.valid.images.data_ptr()) == str(cached[0])
    touched = next((root / "train" / "c3").iterdir())
    os.utime(touched, ns=(10**18, 10**18))
    calls = []
    monkeypatch.setattr(folders, "decode", lambda *a: calls.append(1) or real(*a))
    load_dataset(f"folder:{root}")
    assert calls, "a touched file makes the folder decode again"
    assert len(list(folders.cache_dir().glob("*.npy"))) == 2
    calls.clear()
    load_dataset(f"folder:{root}", options=DataOptions(cache=False))
    assert calls, "--no-cache decodes in memory"


def _mapped_from(address: int) -> str | None:
    """The file whose mapping holds this address in this process (/proc/self/maps), if any."""
    maps = Path("/proc/self/maps")
    if not maps.is_file():
        pytest.skip("no /proc/self/maps on this system")
    for line in maps.read_text().splitlines():
        parts = line.split(maxsplit=5)
        start, end = (int(x, 16) for x in parts[0].split("-"))
        if start <= address < end:
            return parts[5] if len(parts) == 6 else None
    return None


def test_one_folder_of_classes_is_split_stratified_and_the_same_for_every_run(tmp_path, digits):
    root = write_image_folder(tmp_path / "f", {"": digits.valid})  # 450 images, f/<class>/*
    data = load_dataset(f"folder:{root}", options=DataOptions(valid_fraction=0.2))
    assert (len(data.train), len(data.valid)) == (360, 90)
    per_class = torch.bincount(data.valid.labels, minlength=10)
    expected = torch.bincount(digits.valid.labels, minlength=10).double() * 0.2
    assert (per_class.double() - expected).abs().max() < 1
    again = load_dataset(f"folder:{root}", options=DataOptions(valid_fraction=0.2, cache=False))
    assert torch.equal(again.valid.images, data.valid.images)


def test_colour_images_sizes_and_channels(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / "f" / cls).mkdir(parents=True)
        for i in range(3):
            pixels = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "f" / cls / f"{i}.png")
    colour = load_dataset(f"folder:{tmp_path / 'f'}", options=DataOptions(valid_fraction=0.34))
    assert colour.image_shape == (3, 10, 12) and colour.class_names == ("cat", "dog")
    grey = load_dataset(f"folder:{tmp_path / 'f'}", options=DataOptions(channels=1, image_size=(5, 6)))
    assert grey.image_shape == (1, 5, 6)
    first = (
        Image.open(tmp_path / "f" / "cat" / "0.png").convert("L").resize((6, 5), Image.Resampling.BILINEAR)
    )
    images = torch.cat([grey.train.images, grey.valid.images])
    assert any(torch.equal(img[0], torch.from_numpy(np.array(first))) for img in images)
    Image.fromarray(rng.integers(0, 256, (7, 7, 3), dtype=np.uint8)).save(tmp_path / "f" / "dog" / "odd.png")
    with pytest.raises(
        OverfitlabError, match=r"images differ in size: .* is 10×12, .*odd.png is 7×7.*--image-size"
    ):
        load_dataset(f"folder:{tmp_path / 'f'}", options=DataOptions(cache=False))


def _corrupt(root: Path) -> str:
    bad = next((root / "train" / "c1").iterdir())
    bad.write_bytes(b"\x89PNG not really")
    return bad.name


def _empty_class(root: Path) -> Path:
    for png in (root / "train" / "c9").iterdir():
        png.unlink()
    (root / "train" / "c9" / "notes.txt").write_text("not an image")
    return root


def _file(root: Path) -> Path:
    (root / "file.png").write_bytes(b"x")
    return root / "file.png"


def _no_classes(root: Path) -> Path:
    (root / "empty").mkdir()
    return root / "empty"


def _renamed_class(root: Path) -> Path:
    (root / "valid" / "c9").rename(root / "valid" / "nine")
    return root


BAD_FOLDERS = {
    "missing": (lambda root: root / "nowhere", "not found"),
    "file": (_file, "is a file, not a folder"),
    "no-classes": (_no_classes, "has no class subfolders"),
    "empty-class": (_empty_class, "c9 holds no image"),
    "corrupt": (lambda root: _corrupt(root) and root, "cannot read image .*c1"),
    "class-lists": (_renamed_class, "missing here: c9; only here: nine"),
}


@pytest.mark.parametrize("case", BAD_FOLDERS)
def test_bad_folders_are_one_line(tmp_path, digits, case):
    setup, message = BAD_FOLDERS[case]
    root = write_image_folder(tmp_path / "f", {"train": _small(digits.train), "valid": _small(digits.valid)})
    with pytest.raises(OverfitlabError, match=message) as caught:
        load_dataset(f"folder:{setup(root)}", options=DataOptions(cache=False))
    assert "\n" not in str(caught.value)


def _small(split: Split) -> Split:
    take = torch.cat([(split.labels == c).nonzero().flatten()[:3] for c in range(10)])
    return Split(split.images[take], split.labels[take])


def test_a_corrupt_image_from_the_command_line_names_the_file_and_leaves_no_folder(tmp_path, digits, run_cli):
    root = write_image_folder(tmp_path / "f", {"train": _small(digits.train), "valid": _small(digits.valid)})
    name = _corrupt(root)
    result = run_cli("train", "--dataset", f"folder:{root}", "--epochs", "1", "--name", "bad")
    assert result.returncode == 2 and name in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs" / "bad").exists()


def test_training_on_a_folder_keeps_the_class_names(tmp_path, digits, run_cli):
    root = write_image_folder(
        tmp_path / "f",
        {"train": digits.train, "val": digits.valid},
        class_names=[f"digit-{i}" for i in range(10)],
    )
    result = run_cli("train", "--dataset", f"folder:{root}", "--train-size", "200", "--epochs", "1", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["class_names"] == [f"digit-{i}" for i in range(10)]
    assert summary["valid_images"] == 450


# --------------------------------------------------------------------------- arrays
@pytest.mark.parametrize("layout", ["HWC", "CHW", "HW", "float"])
def test_npz_arrays_in_every_layout_give_the_same_data(tmp_path, digits, layout):
    def arrays(split: Split) -> np.ndarray:
        x = split.images.numpy()
        return {
            "HWC": x.transpose(0, 2, 3, 1),
            "CHW": x,
            "HW": x[:, 0],
            "float": x.astype(np.float32) / 255,
        }[layout]

    path = tmp_path / "d.npz"
    np.savez(
        path,
        x_train=arrays(digits.train),
        y_train=digits.train.labels.numpy(),
        x_test=arrays(digits.valid),
        y_test=digits.valid.labels.numpy(),
    )
    data = load_dataset(f"arrays:{path}")
    assert torch.equal(data.train.images, digits.train.images)
    assert torch.equal(data.valid.labels, digits.valid.labels) and data.classes == 10


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x_train": np.zeros((4, 8, 8), np.uint8)}, "no y_train"),
        ({"x_train": np.zeros((4, 8, 8), np.uint8), "y_train": np.zeros(3, int)}, "3 labels for 4 images"),
        (
            {
                "x_train": np.zeros((4, 8, 8), np.uint8),
                "y_train": np.array([0, 1, 1, 0]),
                "x_test": np.zeros((2, 8, 8), np.uint8),
                "y_test": np.array([0, 5]),
            },
            "label 5, out of range",
        ),
        ({"x_train": np.zeros((4, 8), np.uint8), "y_train": np.zeros(4, int)}, "has shape \\[4, 8\\]"),
        ({"x_train": np.full((4, 8, 8), 2.0), "y_train": np.zeros(4, int)}, "outside \\[0, 1\\]"),
        ({"x_train": np.zeros((4, 8, 8), np.uint8), "y_train": np.array([0, -1, 1, 0])}, "label -1"),
    ],
    ids=["missing", "lengths", "range", "shape", "floats", "negative"],
)
def test_bad_npz_files_are_one_line(tmp_path, arrays, message):
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    with pytest.raises(OverfitlabError, match=message):
        load_dataset(f"arrays:{path}")


def test_a_python_data_set_trains_as_the_same_bytes_by_name(digits, tmp_path):
    data = DataSet.from_arrays(
        digits.train.images,
        digits.train.labels,
        digits.valid.images.numpy().transpose(0, 2, 3, 1),
        digits.valid.labels.tolist(),
        name="mine",
    )
    config = Config(train_size=200, epochs=2)
    by_name = train(config)
    given = train(config, tmp_path / "run", data=data)
    assert given.history.epochs == [
        {**e, **{k: given.history.epochs[i][k] for k in e if k.endswith("seconds")}}
        for i, e in enumerate(by_name.history.epochs)
    ]
    assert "python:mine" in (tmp_path / "run" / "config.toml").read_text()


def test_from_torch_reads_a_map_style_dataset_once(digits, monkeypatch):
    from torch.utils.data import TensorDataset

    train_ds = TensorDataset(digits.train.images.float() / 255, digits.train.labels)
    valid_ds = TensorDataset(digits.valid.images.float() / 255, digits.valid.labels)
    data = DataSet.from_torch(train_ds, valid_ds)
    assert torch.equal(data.train.images, digits.train.images) and data.classes == 10
    import overfitlab.data.split as datalib

    monkeypatch.setattr(datalib, "available_memory", lambda: 10_000)
    with pytest.raises(OverfitlabError, match="more than the .* GiB of memory available"):
        DataSet.from_torch(train_ds, valid_ds)


def test_register_dataset_is_the_one_mechanism(digits):
    @register_dataset("tiny-digits-for-test")
    def tiny(options: DataOptions) -> DataSet:
        return DataSet("tiny-digits-for-test", _small(digits.train), digits.valid, 10)

    assert len(load_dataset("tiny-digits-for-test").train) == 30
    assert train(Config(dataset="tiny-digits-for-test", epochs=1, batch_size=10)).data.train_images == 30
    with pytest.raises(ValueError, match="registered twice"):
        register_dataset("digits")(tiny)
    with pytest.raises(OverfitlabError, match="did you mean digits"):
        Config(dataset="digitz").replace()


def test_a_study_given_a_python_data_set_gives_the_numbers_of_the_same_data_by_name(digits, tmp_path):
    spec = make_spec({"train_size": 150, "epochs": 2}, [("baseline", {}), ("l2", {"l2": 1e-3})], 1)
    data = DataSet.from_arrays(
        digits.train.images, digits.train.labels, digits.valid.images, digits.valid.labels
    )
    given = run_study(spec, tmp_path, "given", backend="local", workers=1, data=data, report=False)
    named = run_study(spec, tmp_path, "named", backend="serial", report=False)
    numbers = ("final_valid_acc", "final_valid_loss", "lowest_valid_loss")
    assert [[r[k] for k in numbers] for r in given.runs] == [[r[k] for k in numbers] for r in named.runs]
    study = json.loads((tmp_path / "given" / "study.json").read_text())
    assert study["spec"]["base"]["dataset"] == f"arrays:{tmp_path / 'given' / 'data'}"
    # Resumed with the same spec and data (as `diagnose --resume` does): nothing to redo.
    again = run_study(spec, tmp_path, "given", resume=True, backend="serial", data=data, report=False)
    assert [r["started_at"] for r in again.runs] == [r["started_at"] for r in given.runs]


def test_read_only_arrays_load_without_a_warning_and_are_not_copied():
    """Arrays from np.frombuffer (how one reads IDX files) are read-only: they load without
    PyTorch's "not writable" warning, and share their memory instead of being copied."""
    import warnings

    import numpy as np

    from overfitlab.data.dataset import DataSet

    raw = np.random.default_rng(0).integers(0, 256, 40 * 8 * 8, dtype=np.uint8).tobytes()
    x = np.frombuffer(raw, dtype=np.uint8).reshape(40, 8, 8)
    y = np.arange(40) % 4
    assert not x.flags.writeable
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = DataSet.from_arrays(x, y, x[:8], y[:8])
    assert data.train.images.untyped_storage().data_ptr() == x.__array_interface__["data"][0]
