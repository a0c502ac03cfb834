"""Image folders in torchvision's ``ImageFolder`` layout, decoded once and memory-mapped.

``--dataset folder:PATH`` reads either ``PATH/train/<class>/*`` with ``PATH/valid/<class>/*``
(``val/`` or ``test/`` also name the validation split; a ``test/`` beside ``valid/`` or ``val/``
is a test split that no run trains or chooses on), or ``PATH/<class>/*``, of which a
stratified, seeded ``--valid-fraction`` is held out (the same images for every run). Class
names are the subfolder names, sorted, as ImageFolder numbers them. PNG, JPEG, BMP and WebP.

Decoding tens of thousands of small files takes far longer than an epoch of training on
them, so the decoded images are stored once as one uint8 ``.npy`` array (training images
first, then validation) in the cache folder (``$OVERFITLAB_CACHE_DIR``, default
``~/.cache/overfitlab/folders``), keyed by the folder's file list, sizes and modification
times and the decoding options. Every later run memory-maps that file copy-on-write: the
workers of a study share its pages (one copy in memory, not one per worker). A folder whose
files changed gets a new key and is decoded again; ``--no-cache`` decodes in memory.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from .. import store
from ..errors import OverfitlabError, one_line
from .arrays import held_out_indices
from .split import DataOptions, Split, Splits, check_fits

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
VALID_NAMES = ("valid", "val", "test")
CACHE_FORMAT = 1
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "F", "P")  # P: checked against its palette below


class File(NamedTuple):
    """One image file as listed (a tuple: 70,000 of them are made, sorted and hashed per run)."""

    path: str  # a string, not a Path: 70,000 Path objects take seconds to make and sort
    label: int
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Listing:
    """The files of an image folder: paths, labels and split, before any is decoded."""

    root: Path
    classes: tuple[str, ...]
    train: tuple[File, ...]
    valid: tuple[File, ...] | None  # None: held out from train by valid_fraction
    test: tuple[File, ...] | None = None  # test/ beside a valid/ or val/ folder


def cache_dir() -> Path:
    if os.environ.get("OVERFITLAB_CACHE_DIR"):
        return Path(os.environ["OVERFITLAB_CACHE_DIR"])
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "overfitlab" / "folders"


# --------------------------------------------------------------------------- listing
def _class_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_of(folder: Path, label: int) -> list[File]:
    """The image files under a class folder, at any depth, sorted by path (one stat each)."""
    found: list[File] = []
    pending = [str(folder)]
    while pending:
        directory = pending.pop()
        prefix = directory + os.sep
        # Listed through a descriptor, each stat resolves one name, not the whole path again.
        handle = os.open(directory, os.O_RDONLY)
        try:
            with os.scandir(handle) as entries:
                for entry in entries:
                    name = entry.name
                    if name[0] == ".":
                        continue
                    if entry.is_dir():
                        pending.append(prefix + name)
                    elif name[name.rfind(".") :].lower() in EXTENSIONS and entry.is_file():
                        stat = entry.stat()  # the one system call per file: name and type came listed
                        found.append(File(prefix + name, label, stat.st_size, stat.st_mtime_ns))
        finally:
            os.close(handle)
    found.sort()  # by path: paths are unique, so the tuples' order is theirs
    return found


def _split_files(folder: Path, classes: tuple[str, ...] | None = None) -> tuple[tuple[str, ...], list[File]]:
    found = _class_folders(folder)
    if not found:
        raise OverfitlabError(
            f"{folder} has no class subfolders: put each class's images in {folder}/<class>/ "
            "(ImageFolder's layout)"
        )
    names = tuple(p.name for p in found)
    if classes is not None and names != classes:
        only_train = sorted(set(classes) - set(names))
        only_here = sorted(set(names) - set(classes))
        raise OverfitlabError(
            f"the classes of {folder} differ from the training folder's ("
            + "; ".join(
                part
                for part in (
                    f"missing here: {', '.join(only_train)}" if only_train else "",
                    f"only here: {', '.join(only_here)}" if only_here else "",
                )
                if part
            )
            + "): give both splits the same class subfolders"
        )
    files: list[File] = []
    for label, class_folder in enumerate(found):
        images = _images_of(class_folder, label)
        if not images:
            raise OverfitlabError(
                f"class folder {class_folder} holds no image ({', '.join(EXTENSIONS)}): add images "
                "or remove the folder"
            )
        files += images
    return names, files


def list_folder(root: Path) -> Listing:
    if not root.exists():
        raise OverfitlabError(f"image folder {root} not found: check the path after folder:")
    if not root.is_dir():
        raise OverfitlabError(f"{root} is a file, not a folder: pass the folder that holds the class folders")
    if (root / "train").is_dir():
        classes, train = _split_files(root / "train")
        found = [n for n in VALID_NAMES if (root / n).is_dir()]
        # test/ validates when it is the only other split; beside valid/ or val/ it is the test split.
        valid = tuple(_split_files(root / found[0], classes)[1]) if found else None
        test = tuple(_split_files(root / "test", classes)[1]) if found[1:] and found[-1] == "test" else None
        return Listing(root, classes, tuple(train), valid, test)
    classes, files = _split_files(root)
    return Listing(root, classes, tuple(files), None)


def cache_key(listing: Listing, options: DataOptions) -> str:
    """Changes when a file is added, removed, renamed, rewritten or touched, or an option changes."""
    digest = hashlib.sha256()
    size = list(options.image_size) if options.image_size else None
    digest.update(json.dumps([CACHE_FORMAT, str(listing.root.resolve()), options.channels, size]).encode())
    if listing.valid is None:
        digest.update(repr(options.valid_fraction).encode())
    root = str(listing.root)
    groups = (listing.train, listing.valid or ()) + ((listing.test,) if listing.test else ())
    for group in groups:
        digest.update(b"|")
        digest.update(
            "".join(f"{f.path}\0{f.label}\0{f.size}\0{f.mtime_ns}\n" for f in group)
            .replace(root, "", -1)
            .encode()
        )
    return digest.hexdigest()[:32]


# --------------------------------------------------------------------------- decoding
def unreadable(path: str, err: BaseException) -> OverfitlabError:
    return OverfitlabError(f"cannot read image {path} ({one_line(err)}): replace or delete the file")


def _open(path: str) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(path)
        image.load()
        return image
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise unreadable(path, err) from None


def _is_grey(image: Any) -> bool:
    if image.mode == "P":
        rgb = image.convert("RGB")
        return bool(rgb.convert("L").convert("RGB").tobytes() == rgb.tobytes())
    return bool(image.mode in _GREY_MODES)


def probe(
    files: list[str], channels: int | None, size: tuple[int, int] | None
) -> tuple[int, tuple[int, int]]:
    """The channels and (H, W) to decode to: given, or the images' own (all must agree)."""
    from PIL import Image, UnidentifiedImageError

    sizes: dict[tuple[int, int], str] = {}
    colour = False
    for path in files:
        try:
            with Image.open(path) as image:  # reads the header only
                width, height = image.size
                if channels is None and not colour:
                    colour = not (image.mode in _GREY_MODES and image.mode != "P") and not _is_grey(
                        _open(path)
                    )
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
            raise unreadable(path, err) from None
        if size is None and (height, width) not in sizes:
            sizes[(height, width)] = path
            if len(sizes) > 1:
                (first, a), (second, b) = list(sizes.items())[:2]
                raise OverfitlabError(
                    f"images differ in size: {a} is {first[0]}×{first[1]}, {b} is {second[0]}×{second[1]} "
                    "(H×W): pass --image-size H[,W] to resize them all"
                )
    chosen_size = size if size is not None else next(iter(sizes))
    return channels if channels is not None else (3 if colour else 1), chosen_size


def decode(files: list[str], channels: int, size: tuple[int, int], out: np.ndarray[Any, Any]) -> None:
    """Decode each file into ``out[i]`` as uint8 (C, H, W): grey or RGB, resized bilinearly."""
    from PIL import Image

    mode = "L" if channels == 1 else "RGB"
    height, width = size
    for i, path in enumerate(files):
        image = _open(path)
        if image.mode != mode:
            image = image.convert(mode)
        if image.size != (width, height):
            image = image.resize((width, height), Image.Resampling.BILINEAR)
        pixels = np.asarray(image, dtype=np.uint8)
        out[i] = pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)


# --------------------------------------------------------------------------- loading
class Ordered(NamedTuple):
    """Every file in the order its image is stored: training, validation, then test images."""

    paths: list[str]
    labels: torch.Tensor
    train: int  # how many of them are training images
    valid: int  # how many validation images follow; the rest are the test split's


def ordered(listing: Listing, valid_fraction: float) -> Ordered:
    test = list(listing.test or ())
    if listing.valid is not None:
        files = list(listing.train) + list(listing.valid) + test
        train, valid = len(listing.train), len(listing.valid)
    else:
        labels = torch.tensor([f.label for f in listing.train])
        train_idx, valid_idx = held_out_indices(labels, valid_fraction)
        files = [listing.train[i] for i in torch.cat([train_idx, valid_idx]).tolist()] + test
        train, valid = len(train_idx), len(valid_idx)
    labels = torch.tensor([f.label for f in files], dtype=torch.int64)
    return Ordered([f.path for f in files], labels, train, valid)


def load_folder(root: Path, options: DataOptions) -> Splits:
    listing = list_folder(root)
    files = ordered(listing, options.valid_fraction)
    paths, labels = files.paths, files.labels
    images = _cached(paths, listing, options) if options.cache else _decoded(paths, options, str(root))
    n, m = files.train, files.train + files.valid
    train, valid = Split(images[:n], labels[:n]), Split(images[n:m], labels[n:m])
    test = Split(images[m:], labels[m:]) if listing.test else None
    return Splits(f"folder:{root}", train, valid, len(listing.classes), listing.classes, test)


def _decoded(files: list[str], options: DataOptions, what: str) -> torch.Tensor:
    channels, size = probe(files, options.channels, options.image_size)
    check_fits(len(files), (channels, *size), f"image folder {what}")
    array = np.empty((len(files), channels, *size), dtype=np.uint8)
    decode(files, channels, size, array)
    return torch.from_numpy(array)


def _cached(files: list[str], listing: Listing, options: DataOptions) -> torch.Tensor:
    """The decoded images, memory-mapped from the cache (decoded and stored first on a miss).
    A hit reads no image: the key covers every file's size and modification time."""
    folder = cache_dir()
    key = cache_key(listing, options)
    images_path, done_path = folder / f"{key}.npy", folder / f"{key}.done"
    if not done_path.is_file() or not images_path.is_file():
        images = _decoded(files, options, str(listing.root))
        try:
            folder.mkdir(parents=True, exist_ok=True)
            buffer = io.BytesIO()
            np.save(buffer, images.numpy())
            store.atomic_write(images_path, buffer.getvalue())
            # The marker last: an images file without it is an unfinished write, decoded again.
            store.atomic_write(done_path, json.dumps({"format": CACHE_FORMAT, "images": len(files)}))
        except (OSError, OverfitlabError) as err:
            print(
                f"overfitlab: warning: cannot store decoded images in {folder} ({err}); "
                "decoded in memory (set OVERFITLAB_CACHE_DIR to a writable folder)",
                file=sys.stderr,
            )
            return images
    # Copy-on-write: the pages are the page cache's, shared by every process mapping the file.
    mapped = np.load(images_path, mmap_mode="c")
    return torch.from_numpy(mapped)
