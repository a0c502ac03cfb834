"""Data: the fixed digits split, ToTensor-equal scaling, stratified subsets, label noise, batches,
augmentation, and the real MNIST files (found, truncated, missing)."""

from __future__ import annotations

import shutil
from collections import Counter
from fractions import Fraction

import numpy as np
import pytest
import torch
from conftest import MNIST_RAW
from PIL import Image
from torchvision import transforms

from overfitlab import OverfitlabError
from overfitlab.data.batches import Scaling, add_label_noise, augment, prepare, train_batches
from overfitlab.data.dataset import DataSet
from overfitlab.data.registry import load_dataset
from overfitlab.data.split import Split, stratified_indices

to_tensor = transforms.ToTensor()


def largest_remainder(counts: list[int], size: int) -> list[int]:
    """Quotas by Hamilton's method, in exact fractions; ties go to the earlier class."""
    total = sum(counts)
    exact = [Fraction(c * size, total) for c in counts]
    quota = [int(e) for e in exact]
    by_remainder = sorted(range(len(counts)), key=lambda i: -(exact[i] - quota[i]))  # stable
    for i in by_remainder[: size - sum(quota)]:
        quota[i] += 1
    return quota


# ---------------------------------------------------------------- digits
def sklearn_digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    return np.rint(digits.images * 255 / 16).astype(np.uint8), digits.target


def test_digits_split_is_stratified_450_valid(digits):
    _, target = sklearn_digits()
    counts = np.bincount(target).tolist()
    assert len(digits.valid) == 450 and len(digits.train) == 1347  # 25 % rounded up, as train_test_split
    expected_valid = largest_remainder(counts, 450)
    assert digits.valid.labels.bincount(minlength=10).tolist() == expected_valid
    assert digits.train.labels.bincount(minlength=10).tolist() == [
        c - v for c, v in zip(counts, expected_valid, strict=True)
    ]
    assert digits.classes == 10 and digits.image_shape == (1, 8, 8)
    assert digits.train.images.dtype == torch.uint8 and digits.train.labels.dtype == torch.int64


def test_digits_split_holds_every_image_once(digits):
    images, target = sklearn_digits()
    everything = Counter((img.tobytes(), int(t)) for img, t in zip(images, target, strict=True))
    ours = Counter()
    for split in (digits.train, digits.valid):
        ours.update(
            (img.numpy().tobytes(), int(t)) for img, t in zip(split.images[:, 0], split.labels, strict=True)
        )
    assert ours == everything


def test_digits_split_is_fixed_whatever_the_global_seed(digits):
    torch.manual_seed(12345)
    again = load_dataset("digits")
    for a, b in ((digits.train, again.train), (digits.valid, again.valid)):
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)


# ---------------------------------------------------------------- scaling = ToTensor
def test_digits_scaling_equals_to_tensor(digits):
    images = digits.train.images[:200]
    ours = Scaling()(images)
    theirs = torch.stack([to_tensor(Image.fromarray(img[0].numpy(), mode="L")) for img in images])
    assert torch.equal(ours, theirs)


@pytest.fixture(scope="module")
def mnist(shared_data) -> DataSet:
    return load_dataset("mnist", shared_data, download=False)


@pytest.mark.real_data
def test_mnist_batches_equal_to_tensor_on_the_same_images(mnist, shared_data):
    from torchvision.datasets import MNIST

    reference = MNIST(root=str(shared_data), train=True, download=False, transform=to_tensor)
    batch_size, seed = 32, 7
    # The batch order: one seeded permutation, sliced (the documented rule).
    perm = torch.randperm(len(reference), generator=torch.Generator().manual_seed(seed))
    batches = train_batches(mnist.train, batch_size, torch.Generator().manual_seed(seed))
    for b, (images, labels) in zip(range(3), batches, strict=False):
        idx = perm[b * batch_size : (b + 1) * batch_size].tolist()
        expected = torch.stack([reference[i][0] for i in idx])
        assert torch.equal(Scaling()(images), expected)
        assert labels.tolist() == [reference[i][1] for i in idx]
    valid = MNIST(root=str(shared_data), train=False, download=False, transform=to_tensor)
    assert torch.equal(
        Scaling()(mnist.valid.images[-5:]), torch.stack([valid[i][0] for i in range(9995, 10000)])
    )


@pytest.mark.real_data
def test_mnist_from_shared_data(mnist):
    assert (len(mnist.train), len(mnist.valid), mnist.classes, mnist.image_shape) == (
        60000,
        10000,
        10,
        (1, 28, 28),
    )
    assert mnist.train.labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert mnist.valid.labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert mnist.train.labels.bincount().tolist() == [
        5923,
        6742,
        5958,
        6131,
        5842,
        5421,
        5918,
        6265,
        5851,
        5949,
    ]
    assert mnist.valid.labels.bincount().tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    x = mnist.train.images.double() / 255
    assert float(x.mean()) == pytest.approx(0.1307, abs=5e-5)
    assert float(x.std()) == pytest.approx(0.3081, abs=5e-5)
    assert Scaling.fit(mnist.train.images).mean == pytest.approx(0.1307, abs=5e-5)


# ---------------------------------------------------------------- broken and missing files
def copy_mnist(shared_data, root, truncate: str | None = None, keep: int = 0):
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in MNIST_RAW:
        if name == truncate:
            with open(shared_data / "MNIST" / "raw" / name, "rb") as source:
                (raw / name).write_bytes(source.read(keep))
        else:
            shutil.copyfile(shared_data / "MNIST" / "raw" / name, raw / name)
    return raw


@pytest.mark.real_data
@pytest.mark.parametrize(
    "name, keep",
    [("train-images-idx3-ubyte", 1_000_016), ("train-images-idx3-ubyte", 2), ("t10k-labels-idx1-ubyte", 108)],
)
@pytest.mark.parametrize("download", [False, True])
def test_truncated_idx_file_is_a_user_error(shared_data, tmp_path, name, keep, download):
    raw = copy_mnist(shared_data, tmp_path, truncate=name, keep=keep)
    with pytest.raises(OverfitlabError) as err:
        load_dataset("mnist", tmp_path, download=download)
    message = str(err.value)
    assert "corrupt or truncated" in message and str(raw) in message and "\n" not in message


def test_missing_folder_without_download_says_where_the_files_go(tmp_path):
    with pytest.raises(OverfitlabError) as err:
        load_dataset("mnist", tmp_path / "nowhere", download=False)
    message = str(err.value)
    assert str(tmp_path / "nowhere" / "MNIST" / "raw") in message
    assert "put the official files there" in message and "--data-dir" in message
    assert not (tmp_path / "nowhere").exists()  # nothing created, nothing downloaded


def test_unknown_dataset():
    with pytest.raises(OverfitlabError, match="unknown dataset 'svhn': choose one of digits, mnist"):
        load_dataset("svhn")


# ---------------------------------------------------------------- stratified subsets
@pytest.mark.parametrize(
    "counts, size, quota",
    [
        ([50, 30, 20], 10, [5, 3, 2]),
        ([7, 7, 6], 10, [4, 3, 3]),  # 3.5, 3.5, 3.0: the one spare seat goes to the first tie
        ([1, 1, 1, 97], 4, [0, 0, 0, 4]),  # 0.04 ×3 and 3.88: the largest remainder wins
        ([3, 9], 12, [3, 9]),  # everything
    ],
)
def test_stratified_indices_by_hand(counts, size, quota):
    labels = torch.cat([torch.full((c,), k) for k, c in enumerate(counts)])
    labels = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))]
    idx = stratified_indices(labels, size, torch.Generator().manual_seed(0))
    assert quota == largest_remainder(counts, size)
    assert labels[idx].bincount(minlength=len(counts)).tolist() == quota
    assert idx.tolist() == sorted(set(idx.tolist()))


def test_stratified_indices_are_seeded(digits):
    labels = digits.train.labels
    first = stratified_indices(labels, 300, torch.Generator().manual_seed(5))
    assert torch.equal(first, stratified_indices(labels, 300, torch.Generator().manual_seed(5)))
    assert not torch.equal(first, stratified_indices(labels, 300, torch.Generator().manual_seed(6)))


def test_prepare_subset_is_stratified(digits):
    data = prepare(digits, train_size=300, label_noise=0.0, seed=0)
    counts = digits.train.labels.bincount().tolist()
    assert data.train.labels.bincount().tolist() == largest_remainder(counts, 300)
    assert data.valid is digits.valid
    with pytest.raises(OverfitlabError, match="pass at most 1347"):
        prepare(digits, train_size=1348, label_noise=0.0, seed=0)


# ---------------------------------------------------------------- label noise
@pytest.mark.parametrize("fraction, n", [(0.3, 200), (0.125, 200), (1.0, 50), (0.004, 100)])
def test_label_noise_changes_round_p_n_labels_to_other_classes(fraction, n):
    labels = torch.arange(n) % 10
    split = Split(torch.zeros(n, 1, 2, 2, dtype=torch.uint8), labels)
    noisy = add_label_noise(split, fraction, 10, torch.Generator().manual_seed(0))
    changed = noisy.labels != labels
    assert int(changed.sum()) == round(fraction * n)
    assert ((noisy.labels >= 0) & (noisy.labels < 10)).all()
    assert torch.equal(split.labels, torch.arange(n) % 10)  # the input is not modified
    again = add_label_noise(split, fraction, 10, torch.Generator().manual_seed(0))
    assert torch.equal(noisy.labels, again.labels)


def test_label_noise_is_seeded_and_uses_every_wrong_class():
    labels = torch.zeros(2000, dtype=torch.long)
    split = Split(torch.zeros(2000, 1, 1, 1, dtype=torch.uint8), labels)
    a = add_label_noise(split, 0.5, 10, torch.Generator().manual_seed(0)).labels
    b = add_label_noise(split, 0.5, 10, torch.Generator().manual_seed(1)).labels
    assert not torch.equal(a, b)
    assert set(a[a != 0].tolist()) == set(range(1, 10))


def test_prepare_label_noise_on_the_subset(digits):
    clean = prepare(digits, train_size=300, label_noise=0.0, seed=4)
    noisy = prepare(digits, train_size=300, label_noise=0.2, seed=4)
    assert torch.equal(clean.train.images, noisy.train.images)
    assert int((clean.train.labels != noisy.train.labels).sum()) == 60
    assert torch.equal(noisy.valid.labels, digits.valid.labels)  # validation stays clean


# ---------------------------------------------------------------- batches
def numbered_split(n: int) -> Split:
    return Split(torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1), torch.arange(n))


@pytest.mark.parametrize(
    "n, batch_size, drop_last, sizes",
    [
        (100, 32, True, [32, 32, 32]),
        (100, 32, False, [32, 32, 32, 4]),
        (96, 32, True, [32, 32, 32]),
        (31, 32, True, []),
    ],
)
def test_train_batches_count_and_cover(n, batch_size, drop_last, sizes):
    batches = list(train_batches(numbered_split(n), batch_size, torch.Generator().manual_seed(0), drop_last))
    assert [len(labels) for _, labels in batches] == sizes
    seen = torch.cat([labels for _, labels in batches]) if batches else torch.empty(0, dtype=torch.long)
    assert len(set(seen.tolist())) == sum(sizes)  # no sample twice in an epoch
    for images, labels in batches:
        assert torch.equal(images.view(-1).long(), labels)  # images travel with their labels
    if len(sizes) > 1:  # shuffled, not in order
        assert seen.tolist() != sorted(seen.tolist())


def test_train_batches_are_seeded():
    split = numbered_split(100)
    first = [labels.tolist() for _, labels in train_batches(split, 10, torch.Generator().manual_seed(3))]
    again = [labels.tolist() for _, labels in train_batches(split, 10, torch.Generator().manual_seed(3))]
    other = [labels.tolist() for _, labels in train_batches(split, 10, torch.Generator().manual_seed(4))]
    assert first == again and first != other


# ---------------------------------------------------------------- augmentation
@pytest.mark.parametrize("shape", [(16, 1, 8, 8), (16, 1, 28, 28), (8, 3, 32, 32)])
def test_augment_without_shift_or_rotation_is_the_identity(shape):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    y = augment(x, torch.Generator().manual_seed(1), max_shift=0, max_degrees=0)
    assert y.shape == x.shape
    torch.testing.assert_close(y, x, rtol=0, atol=1e-5)


def test_augment_keeps_shape_changes_images_and_is_seeded(digits):
    x = Scaling()(digits.train.images[:64])
    y = augment(x, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.dtype == x.dtype
    assert (y - x).abs().amax(dim=(1, 2, 3)).min() > 0.01  # every image moved
    assert torch.equal(y, augment(x, torch.Generator().manual_seed(0)))


def test_augment_shift_is_at_most_max_shift_pixels():
    # One bright 2×2 square in the middle of a 28×28 image; its centre of mass moves ≤ 2 px.
    x = torch.zeros(64, 1, 28, 28)
    x[:, :, 13:15, 13:15] = 1.0
    y = augment(x, torch.Generator().manual_seed(0), max_shift=2.0, max_degrees=0.0)
    grid = torch.arange(28, dtype=torch.float32)
    mass = y.sum(dim=(1, 2, 3))
    cy = (y.sum(dim=3).squeeze(1) * grid).sum(1) / mass
    cx = (y.sum(dim=2).squeeze(1) * grid).sum(1) / mass
    assert ((cx - 13.5).abs() <= 2 + 1e-4).all() and ((cy - 13.5).abs() <= 2 + 1e-4).all()
    assert (cx - 13.5).abs().max() > 1.0  # and it does move, about as far as allowed


def test_torchvision_sets_keep_their_class_names(mnist, shared_data):
    from torchvision.datasets import FashionMNIST

    assert mnist.class_names is not None and mnist.class_names[3] == "3 - three"
    fashion = load_dataset("fashion-mnist", shared_data, download=False)
    assert fashion.class_names == tuple(FashionMNIST.classes) and fashion.class_names[6] == "Shirt"
