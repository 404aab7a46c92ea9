"""Datasets of the papers: indexing, a decoded-image cache, the per-class splits, and tensors for models.

Every dataset is first *indexed* (paths, labels, class names), then decoded once into a uint8 array of
square images cached under ``data/cache`` (keyed by the files' sizes and dates and by the resize, so a
changed source or transform makes a new cache), then served as float tensors in [0, 1].
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from cnnvis.run_record import RunRecord
from cnnvis.shards import write_atomically

log = logging.getLogger(__name__)

CACHE_VERSION = 1
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}

class DatasetNotFoundError(FileNotFoundError):
    """The data are not where the config points, or none of them is readable; the message says where they were
    looked for and how to get them."""


@dataclass
class ImageIndex:
    """Where a dataset's images are and what they show."""

    name: str
    paths: list[str]
    labels: np.ndarray
    classes: list[str]

    def select(self, keep) -> "ImageIndex":
        keep = np.asarray(keep)
        return ImageIndex(self.name, [self.paths[i] for i in keep], self.labels[keep], self.classes)


@dataclass
class ImageSet:
    """Decoded square images (N, S, S, 3) uint8, with labels; ``sizes`` holds the original (width, height)."""

    name: str
    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    paths: list[str]
    sizes: np.ndarray
    resize_mode: str = "crop"
    skipped: list[str] = field(default_factory=list)

    def __len__(self):
        return len(self.labels)

    def subset(self, idx) -> "ImageSet":
        idx = np.asarray(idx, dtype=np.int64)
        return ImageSet(self.name, self.images[idx], self.labels[idx], self.classes,
                        [self.paths[i] for i in idx], self.sizes[idx], self.resize_mode, self.skipped)

    def tensors(self, idx=None, size: int | None = None) -> torch.Tensor:
        """Images as float (N, 3, size, size) in [0, 1], center-cropped to ``size``."""
        images = self.images if idx is None else self.images[np.asarray(idx)]
        return center_crop(to_tensor(images), size)

    def batches(self, positions, size: int | None, batch_size: int):
        """(positions, float batch) for consecutive runs of ``batch_size`` of ``positions``."""
        for start in range(0, len(positions), batch_size):
            chunk = positions[start:start + batch_size]
            yield chunk, self.tensors(chunk, size)

    def mean_color(self) -> torch.Tensor:
        """The dataset's mean RGB colour in [0, 1] (the ZFNet occluder's grey)."""
        return torch.from_numpy(self.images.reshape(-1, 3).mean(0) / 255.0).float()

    def box_in_image(self, i: int, box, size: int | None = None) -> np.ndarray:
        """A box (x0, y0, x1, y1) in the original image's pixels, in cached (then center-cropped) pixels."""
        w, h = self.sizes[i]
        side = self.images.shape[1]
        x0, y0, x1, y1 = np.asarray(box, dtype=np.float64)
        if self.resize_mode == "stretch":
            sx, sy, ox, oy = side / w, side / h, 0.0, 0.0
        else:
            scale = side / min(w, h)
            sx = sy = scale
            ox, oy = (w * scale - side) / 2, (h * scale - side) / 2
        crop = (side - (size or side)) / 2
        out = np.array([x0 * sx - ox - crop, y0 * sy - oy - crop, x1 * sx - ox - crop, y1 * sy - oy - crop])
        return np.clip(out, 0, size or side)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)


def load_image(path, size: int = 224, mode: str = "crop") -> torch.Tensor:
    """One image file as a (1, 3, size, size) batch in [0, 1], resized as the datasets are (``resize_square``)."""
    return to_tensor(resize_square(decode_image(str(path)), size, mode)[None].copy())  # PIL arrays are read-only


def center_crop(x: torch.Tensor, size: int | None) -> torch.Tensor:
    if size is None or size == x.shape[-1]:
        return x
    top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
    return x[..., top:top + size, left:left + size]


# ---------------------------------------------------------------- indexing


def _not_found(name: str, searched: Path, how: str) -> DatasetNotFoundError:
    return DatasetNotFoundError(
        f"{name} not found: looked in {searched}. {how} "
        f"Point dataset.root (or the DATA_ROOT environment variable) at the folder that holds it.")


def index_caltech101(root: str, download: bool = False, include_background: bool = False) -> ImageIndex:
    """Caltech-101 through torchvision's class (its download and layout); BACKGROUND_Google on request."""
    from torchvision.datasets import Caltech101

    try:
        ds = Caltech101(root, target_type="category", download=download)
    except RuntimeError:
        raise _not_found("Caltech-101", Path(root) / "caltech101" / "101_ObjectCategories",
                         "Use dataset.download=true, or unpack 101_ObjectCategories there "
                         "(caltech101/101_ObjectCategories/<category>/image_NNNN.jpg).") from None
    folder = Path(ds.root) / "101_ObjectCategories"
    paths = [str(folder / ds.categories[y] / f"image_{i:04d}.jpg") for y, i in zip(ds.y, ds.index)]
    labels, classes = list(ds.y), list(ds.categories)
    if include_background:
        extra = sorted(p for p in (folder / "BACKGROUND_Google").glob("*.jpg"))
        paths += [str(p) for p in extra]
        labels += [len(classes)] * len(extra)
        classes.append("BACKGROUND_Google")
    return ImageIndex("caltech101", paths, np.asarray(labels, dtype=np.int64), classes)


def index_caltech256(root: str, download: bool = False, include_background: bool = False) -> ImageIndex:
    """Caltech-256 through torchvision's class; the 257.clutter folder is the background class."""
    from torchvision.datasets import Caltech256

    try:
        ds = Caltech256(root, download=download)
    except RuntimeError:
        raise _not_found("Caltech-256", Path(root) / "caltech256" / "256_ObjectCategories",
                         "Use dataset.download=true, or unpack 256_ObjectCategories there "
                         "(caltech256/256_ObjectCategories/NNN.name/NNN_NNNN.jpg).") from None
    folder = Path(ds.root) / "256_ObjectCategories"
    paths = [str(folder / ds.categories[y] / f"{y + 1:03d}_{i:04d}.jpg") for y, i in zip(ds.y, ds.index)]
    index = ImageIndex("caltech256", paths, np.asarray(ds.y, dtype=np.int64), list(ds.categories))
    clutter = [c for c, name in enumerate(ds.categories) if name.endswith("clutter")]
    if include_background or not clutter:
        return index
    return index.select(np.flatnonzero(index.labels != clutter[0]))


CALTECH101_ANNOTATION_DIRS = {"Faces": "Faces_2", "Faces_easy": "Faces_3", "Motorbikes": "Motorbikes_16",
                              "airplanes": "Airplanes_Side_2"}


def caltech101_box_categories(root: str) -> set[str]:
    """The Caltech-101 categories that have an annotation folder (24 of the 101 here)."""
    folder = Path(root) / "caltech101" / "Annotations"
    if not folder.is_dir():
        raise _not_found("Caltech-101 annotations", folder, "Unpack Annotations/ beside 101_ObjectCategories.")
    category = {folder_name: name for name, folder_name in CALTECH101_ANNOTATION_DIRS.items()}
    return {category.get(d.name, d.name) for d in folder.iterdir() if d.is_dir()}


def caltech101_boxes(index: ImageIndex, root: str) -> dict[str, np.ndarray]:
    """Object boxes (x0, y0, x1, y1) in 0-based image pixels for the Caltech-101 images that have one
    (``<root>/caltech101/Annotations``: 24 of the 101 categories here)."""
    from scipy.io import loadmat

    folder = Path(root) / "caltech101" / "Annotations"
    if not folder.is_dir():
        raise _not_found("Caltech-101 annotations", folder, "Unpack Annotations/ beside 101_ObjectCategories.")
    boxes = {}
    for path in index.paths:
        category, file = Path(path).parts[-2:]
        mat = folder / CALTECH101_ANNOTATION_DIRS.get(category, category) / file.replace("image_", "annotation_").replace(".jpg", ".mat")
        if mat.is_file():
            top, bottom, left, right = loadmat(mat)["box_coord"][0].astype(np.float64)
            boxes[path] = np.array([left - 1, top - 1, right, bottom])
    return boxes


def imagenet_classes() -> list[str]:
    """The 1,000 ImageNet class names in the standard order (torchvision's, no download)."""
    from torchvision.models import ResNet18_Weights

    return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def index_imagenet_val(folder: Path) -> ImageIndex:
    """Images plus ``labels.txt`` (``<file>, <class index>``), as in imagenet-val-1300."""
    labels_file = folder / "labels.txt"
    if not labels_file.is_file():
        raise _not_found("ImageNet validation images", folder,
                         "Expected images/<file>.JPEG and labels.txt with '<file>, <class index>' lines.")
    paths, labels = [], []
    for line in labels_file.read_text().splitlines():
        if line.strip():
            name, label = (s.strip() for s in line.split(","))
            paths.append(str(folder / "images" / name))
            labels.append(int(label))
    return ImageIndex("imagenet_val", paths, np.asarray(labels, dtype=np.int64), imagenet_classes())


def index_imagefolder(folder: Path, name: str = "imagefolder") -> ImageIndex:
    """Any class-per-folder tree, ``<folder>/<class>/<image>``; a folder of loose images has no labels (-1)."""
    if not folder.is_dir():
        raise _not_found("image folder", folder, "Expected <class>/<image> sub-folders or image files.")
    loose = sorted(str(p) for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if loose:
        return ImageIndex(name, loose, np.full(len(loose), -1, dtype=np.int64), [])
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir())
    paths, labels = [], []
    for y, c in enumerate(classes):
        files = sorted(p for p in (folder / c).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        paths += [str(p) for p in files]
        labels += [y] * len(files)
    if not paths:
        raise DatasetNotFoundError(f"no images in {folder}: expected image files ({', '.join(sorted(IMAGE_SUFFIXES))}) "
                                   f"or <class>/ sub-folders of them")
    return ImageIndex(name, paths, np.asarray(labels, dtype=np.int64), classes)


# Real photos that ship inside installed packages, with their ImageNet class where one fits (-1: none).
SAMPLES = [
    ("sklearn", "china.jpg", 698),  # palace
    ("sklearn", "flower.jpg", 985),  # daisy
    ("skimage", "chelsea.png", 281),  # tabby cat
    ("skimage", "coffee.png", 968),  # cup
    ("skimage", "rocket.jpg", 657),  # missile
    ("skimage", "astronaut.png", -1),
    ("skimage", "camera.png", 759),  # grayscale; reflex camera
]


def index_samples() -> ImageIndex:
    import sklearn.datasets
    import skimage.data

    dirs = {"sklearn": Path(sklearn.datasets.__file__).parent / "images", "skimage": Path(skimage.data.__file__).parent}
    paths = [str(dirs[pkg] / file) for pkg, file, _ in SAMPLES]
    return ImageIndex("samples", paths, np.asarray([y for *_, y in SAMPLES], dtype=np.int64), imagenet_classes())


def index_dataset(cfg) -> ImageIndex:
    """The index of ``cfg`` (a DatasetConfig): caltech101, caltech256, imagenet_val, imagefolder or samples."""
    root = Path(cfg.root)
    if cfg.name == "caltech101":
        return index_caltech101(str(root), cfg.download, cfg.include_background)
    if cfg.name == "caltech256":
        return index_caltech256(str(root), cfg.download, cfg.include_background)
    if cfg.name == "imagenet_val":
        return index_imagenet_val(root / (cfg.subdir or "imagenet-val-1300"))
    if cfg.name == "imagefolder":
        return index_imagefolder(root / cfg.subdir)
    if cfg.name == "samples":
        return index_samples()
    raise ValueError(f"unknown dataset {cfg.name!r}; available: caltech101, caltech256, imagenet_val, imagefolder, samples")


# ---------------------------------------------------------------- decoding and the cache


def decode_image(path: str) -> Image.Image:
    """An RGB image: grayscale, palette and RGBA files are converted (alpha composited on white)."""
    with Image.open(path) as img:
        img.load()
        if img.mode in ("RGBA", "LA", "P"):
            rgba = img.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(white, rgba).convert("RGB")
        return img.convert("RGB")


def resize_square(img: Image.Image, size: int, mode: str = "crop") -> np.ndarray:
    """``crop``: shorter side to ``size``, then the central square (ZFNet's recipe); ``stretch``: to size x size."""
    if mode == "stretch":
        return np.asarray(img.resize((size, size), Image.BILINEAR))
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((nw, nh), Image.BILINEAR)
    left, top = (nw - size) // 2, (nh - size) // 2
    return np.asarray(img.crop((left, top, left + size, top + size)))


class _Decode(Dataset):
    def __init__(self, paths, size, mode):
        self.paths, self.size, self.mode = paths, size, mode

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        try:
            img = decode_image(self.paths[i])
            return i, resize_square(img, self.size, self.mode), img.size, None
        except Exception as err:  # a corrupt file is reported by path, never counted as an image
            return i, None, None, f"{type(err).__name__}: {err}"


def _as_is(sample):
    return sample


def cache_key(index: ImageIndex, size: int, mode: str) -> str:
    h = hashlib.sha1(f"{CACHE_VERSION}|{size}|{mode}|{index.name}".encode())
    for path, label in zip(index.paths, index.labels):
        st = os.stat(path)
        h.update(f"{path}|{st.st_size}|{st.st_mtime_ns}|{label}\n".encode())
    return h.hexdigest()[:16]


def decode_to_cache(index: ImageIndex, size: int, mode: str = "crop", cache_dir: str | None = "data/cache",
                    num_workers: int = 2, record: RunRecord | None = None) -> ImageSet:
    """Decode and resize every image once; later calls read the cached array (memory-mapped). The set is added to
    ``record`` (run.json's datasets_loaded) when one is given."""
    missing = [p for p in index.paths if not os.path.exists(p)]
    if missing:
        raise DatasetNotFoundError(f"{len(missing)} image(s) listed for {index.name} do not exist, e.g. {missing[0]}")
    key = cache_key(index, size, mode)
    stem = Path(cache_dir or ".") / f"{index.name}-{size}-{mode}-{key}"
    if cache_dir and stem.with_suffix(".json").exists():
        meta = json.loads(stem.with_suffix(".json").read_text())
        images = np.load(stem.with_suffix(".npy"), mmap_mode="r")
        return _image_set(index, images, meta, mode, record)

    images = np.zeros((len(index.paths), size, size, 3), dtype=np.uint8)
    sizes = np.zeros((len(index.paths), 2), dtype=np.int64)
    ok = np.zeros(len(index.paths), dtype=bool)
    skipped = []
    loader = DataLoader(_Decode(index.paths, size, mode), batch_size=None, num_workers=num_workers, collate_fn=_as_is,
                        generator=torch.Generator())  # not the global RNG: a cold cache must not change later draws
    for i, array, wh, error in tqdm(loader, total=len(index.paths), desc=f"decoding {index.name}", leave=False):
        if error is not None:
            log.warning("skipping unreadable image %s (%s)", index.paths[i], error)
            skipped.append(index.paths[i])
            continue
        images[i], sizes[i], ok[i] = array, wh, True
    meta = {"keep": np.flatnonzero(ok).tolist(), "sizes": sizes[ok].tolist(), "skipped": skipped}
    images = images[ok]
    image_set = _image_set(index, images, meta, mode, record)  # before the cache: a set with no readable image is an error
    if cache_dir:
        stem.parent.mkdir(parents=True, exist_ok=True)
        # whole files of this process: torchrun ranks decode the same set at once
        write_atomically(stem.with_suffix(".npy"), lambda tmp: np.save(tmp, images))
        write_atomically(stem.with_suffix(".json"), lambda tmp: tmp.write_text(json.dumps(meta)))  # last: complete
    return image_set


def _image_set(index: ImageIndex, images: np.ndarray, meta: dict, mode: str, record: RunRecord | None) -> ImageSet:
    keep = np.asarray(meta["keep"], dtype=np.int64)
    if index.paths and not len(keep):
        folder = os.path.commonpath([os.path.dirname(p) for p in index.paths])
        names = [os.path.relpath(p, folder) for p in meta["skipped"]]
        more = f" and {len(names) - 5} more" if len(names) > 5 else ""
        raise DatasetNotFoundError(f"no readable images in {folder}: skipped {len(names)} unreadable file(s): "
                                   f"{', '.join(names[:5])}{more}")
    if meta["skipped"]:
        log.warning("%s: %d unreadable image(s) skipped: %s", index.name, len(meta["skipped"]), ", ".join(meta["skipped"]))
    if record is not None:
        record.add_dataset(index.name, index.paths, len(keep), len(meta["skipped"]))
    return ImageSet(index.name, images, index.labels[keep], index.classes, [index.paths[i] for i in keep],
                    np.asarray(meta["sizes"], dtype=np.int64).reshape(-1, 2), mode, list(meta["skipped"]))


class _Squares(Dataset):
    """Image i decoded and resized as the cache stores it: (side, side, 3) uint8."""

    def __init__(self, paths, side, mode):
        self.paths, self.side, self.mode = paths, side, mode

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        try:
            img = decode_image(self.paths[i])
        except Exception as err:  # streamed images cannot be skipped: the positions of the others would shift
            raise OSError(f"unreadable image {self.paths[i]}: {type(err).__name__}: {err}") from err
        return torch.from_numpy(resize_square(img, self.side, self.mode).copy())  # PIL arrays are read-only


@dataclass
class ImageFiles:
    """A dataset's images decoded when they are read (by DataLoader workers), never all at once: memory is bounded by
    the batch, whatever the dataset's size. The pixels are ``decode_to_cache``'s; an unreadable file is an error
    here (the cache skips it)."""

    name: str
    paths: list[str]
    labels: np.ndarray
    classes: list[str]
    side: int
    resize_mode: str = "crop"
    num_workers: int = 2

    def __len__(self):
        return len(self.labels)

    def subset(self, idx) -> "ImageFiles":
        idx = np.asarray(idx, dtype=np.int64)
        return ImageFiles(self.name, [self.paths[i] for i in idx], self.labels[idx], self.classes, self.side,
                          self.resize_mode, self.num_workers)

    def _squares(self):
        return _Squares(self.paths, self.side, self.resize_mode)

    def tensors(self, idx=None, size: int | None = None) -> torch.Tensor:
        """Images as float (N, 3, size, size) in [0, 1], center-cropped to ``size`` (decoded in this process)."""
        idx = range(len(self)) if idx is None else np.asarray(idx).reshape(-1)
        return center_crop(to_tensor(np.stack([self._squares()[int(i)].numpy() for i in idx])), size)

    def batches(self, positions, size: int | None, batch_size: int):
        """(positions, float batch) for consecutive runs of ``batch_size`` of ``positions``, decoded by workers."""
        loader = DataLoader(Subset(self._squares(), list(positions)), batch_size=batch_size,
                            num_workers=self.num_workers, generator=torch.Generator())  # leaves the global RNG alone
        for start, batch in zip(range(0, len(positions), batch_size), loader):
            yield positions[start:start + batch_size], center_crop(batch.permute(0, 3, 1, 2).float().div_(255.0), size)

    def mean_color(self) -> torch.Tensor:
        """The dataset's mean RGB colour in [0, 1], summed batch by batch (exact: integer sums in float64)."""
        total = np.zeros(3)
        squares = DataLoader(self._squares(), batch_size=64, num_workers=self.num_workers, generator=torch.Generator())
        for batch in squares:
            total += batch.numpy().reshape(-1, 3).sum(0, dtype=np.float64)
        return torch.from_numpy(total / (len(self) * self.side * self.side) / 255.0).float()


def smoke_subset(index: ImageIndex, classes: int = 4, per_class: int = 3) -> ImageIndex:
    """A few images of the first few classes, for ``smoke=true`` runs."""
    keep, seen = [], {}
    for i, y in enumerate(index.labels):
        if (y in seen or len(seen) < classes) and seen.get(y, 0) < per_class:
            seen[y] = seen.get(y, 0) + 1
            keep.append(i)
    return index.select(keep)


def load_images(cfg, input_size: int = 224, cache_dir: str | None = "data/cache", smoke: bool = False,
                record: RunRecord | None = None) -> ImageSet | ImageFiles:
    """Index, (smoke-)subset and decode a dataset config; images are cached at ``cfg.resize`` pixels
    (default: ``input_size * 256 / 224``, the paper's 256 for 224 crops), or with ``cfg.stream`` decoded when read
    (``ImageFiles``: memory bounded by the batch)."""
    index = index_dataset(cfg)
    if smoke:
        index = smoke_subset(index)
    if cfg.max_images is not None:
        index = index.select(np.arange(min(cfg.max_images, len(index.paths))))
    size = cfg.resize or round(input_size * 256 / 224)
    mode = getattr(cfg.resize_mode, "value", cfg.resize_mode)
    if cfg.stream:
        if record is not None:
            record.add_dataset(index.name, index.paths, len(index.paths), 0)
        return ImageFiles(index.name, index.paths, index.labels, index.classes, size, mode, cfg.num_workers)
    return decode_to_cache(index, size, mode, cache_dir, cfg.num_workers, record)


# ---------------------------------------------------------------- splits and tensors


def per_class_split(labels, train_per_class: int | None, test_per_class: int | None, fold: int = 0, seed: int = 0):
    """The papers' protocol: per class, ``train_per_class`` random images for training and up to
    ``test_per_class`` of the rest for testing (all of the rest when None). Seeded by (seed, fold)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng([seed, fold])
    train, test = [], []
    for y in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == y))
        n_train = len(idx) if train_per_class is None else min(train_per_class, len(idx))
        rest = idx[n_train:]
        train += idx[:n_train].tolist()
        test += (rest if test_per_class is None else rest[:test_per_class]).tolist()
    return np.sort(np.asarray(train, dtype=np.int64)), np.sort(np.asarray(test, dtype=np.int64))


class ImageTensors(Dataset):
    """(image, label) pairs from cached images: random crop + flip for training, center crop otherwise."""

    def __init__(self, images: ImageSet, idx, input_size: int, train: bool = False):
        self.images, self.idx, self.size, self.train = images, np.asarray(idx), input_size, train

    def __len__(self):
        return len(self.idx)

    def __getitem__(self, i):
        j = self.idx[i]
        x = torch.from_numpy(np.array(self.images.images[j])).permute(2, 0, 1)
        side = x.shape[-1]
        if self.train:
            top, left = torch.randint(0, side - self.size + 1, (2,)).tolist()
            x = x[:, top:top + self.size, left:left + self.size]
            if torch.rand(()) < 0.5:
                x = x.flip(-1)
        else:
            x = center_crop(x, self.size)
        return x.float().div_(255.0), int(self.images.labels[j])
