"""Training from scratch or fine-tuning, the Zeiler & Fergus / Krizhevsky recipe as options.

``fit`` is one loop for one process or many (``torchrun`` -> DistributedDataParallel): SGD with momentum,
the learning rate lowered when the validation loss stops improving, optional paper initialization and
filter-RMS renormalization, random crops and flips (done by the dataset), a checkpoint after every epoch
(and every ``checkpoint_every`` steps), kept epochs for the feature-evolution figure, and resume.

Resume is exact: the sample order of an epoch is a seeded permutation of (seed, epoch), each sample's
augmentation is seeded by (seed, epoch, index), and the checkpoint holds the model, optimizer, scheduler,
the partial epoch's sums and the RNG states (dropout). So a run killed anywhere and restarted with the same
command ends with the same metrics as an uninterrupted one. Checkpoints hold only tensors and plain Python
values, are written atomically (temporary file, then rename) and loaded with ``weights_only=True``.
"""

from __future__ import annotations

import logging
import math
import os
import random
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

log = logging.getLogger(__name__)

PAPER_KEEP_EPOCHS = (1, 2, 5, 10, 20, 30, 40, 64)  # Zeiler & Fergus Fig. 4 (of a 70-epoch run)
PAPER_EPOCHS = 64
KILL_ENV = "CNNVIS_TRAIN_KILL_AFTER_STEPS"  # tests: SIGKILL this process after N optimizer steps
HISTORY_COLUMNS = ["epoch", "lr", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5", "seconds"]


@dataclass
class TrainConfig:
    """The training recipe (also a Hydra structured-config node)."""

    epochs: int = 10
    batch_size: int = 64  # global: split over the processes of a distributed run
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    plateau_factor: float = 0.1  # lr *= factor when val loss stops improving
    plateau_patience: int = 1
    paper_init: bool = False  # ZF: weights N(0, 1e-2), biases 0
    filter_rms: Optional[float] = None  # ZF: 0.1 -> renormalize conv filters whose RMS exceeds it
    ten_crop: bool = False  # final validation by 10 crops (corners + centre, and their flips)
    keep_epochs: Optional[list[int]] = None  # None: the paper's 1,2,5,10,20,30,40,64 scaled to `epochs`
    num_workers: int = 2
    amp: bool = True  # GPU only
    channels_last: bool = True  # GPU only
    trainable: Optional[list[str]] = None  # None: all params; else only params whose name starts with a prefix
    checkpoint_every: int = 0  # also write last.pt every N optimizer steps (0: only at epoch ends)
    eval_batch_size: int = 128
    kaiming_init: bool = False  # He et al. 2015 (normal, fan-in, ReLU gain), biases 0; ignored with paper_init
    linear_init_std: Optional[float] = None  # with kaiming_init: Linear weights N(0, std) instead (torchvision's VGG)


def scaled_keep_epochs(epochs: int) -> list[int]:
    """The paper's kept epochs 1, 2, 5, 10, 20, 30, 40, 64 mapped onto a run of ``epochs`` (deduplicated)."""
    return sorted({min(epochs, max(1, round(e * epochs / PAPER_EPOCHS))) for e in PAPER_KEEP_EPOCHS})


def paper_init_(model: nn.Module, std: float = 1e-2) -> None:
    """Zeiler & Fergus: every conv and linear weight N(0, std), every bias 0."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def kaiming_init_(model: nn.Module, linear_std: Optional[float] = None) -> None:
    """He et al. 2015: keeps the signal's scale through deep ReLU stacks without normalization layers, where
    N(0, 1e-2) (and PyTorch's default) shrink it layer after layer and a short run never starts learning.
    ``linear_std`` draws Linear weights from N(0, linear_std) instead: a wide fc head (AlexNet's 9216-4096-4096)
    under He init starts with logits so large that the first steps at lr 1e-2 kill every ReLU."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            if isinstance(m, nn.Linear) and linear_std is not None:
                nn.init.normal_(m.weight, 0.0, linear_std)
            else:
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


@torch.no_grad()
def renormalize_filters_(model: nn.Module, max_rms: float) -> int:
    """Rescale every conv filter whose RMS exceeds ``max_rms`` back to it; returns how many were rescaled."""
    count = 0
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            rms = m.weight.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt()
            scale = (max_rms / rms).clamp(max=1.0)
            m.weight.mul_(scale)
            count += int((scale < 1).sum())
    return count


# ---------------------------------------------------------------- distributed set-up


def distributed_context(device=None) -> tuple[int, int, torch.device]:
    """(rank, world size, device); under ``torchrun`` (WORLD_SIZE > 1) joins the process group:
    NCCL on GPUs, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if world <= 1:
        return 0, 1, device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def is_main_process() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def _all_sum(values: list[float], device) -> list[float]:
    if not dist.is_initialized():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


# ---------------------------------------------------------------- data order and augmentation


class EpochSampler(Sampler):
    """This rank's share of a seeded permutation of (seed, epoch), from position ``start`` on.

    The permutation is padded to a multiple of the world size (as DistributedSampler does) and rank r takes
    every world-th index from r, so the union of the ranks' i-th batches is the single-process i-th batch.
    Yields (index, epoch) so that the dataset can seed each sample's augmentation.
    """

    def __init__(self, n: int, seed: int, epoch: int, rank: int = 0, world: int = 1, start: int = 0):
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        perm = torch.randperm(n, generator=g).tolist()
        total = math.ceil(n / world) * world
        perm += perm[: total - n]
        self.indices = perm[rank::world][start:]
        self.epoch = epoch

    def __iter__(self):
        return iter((i, self.epoch) for i in self.indices)

    def __len__(self):
        return len(self.indices)


class SeededSamples(Dataset):
    """A dataset whose random augmentation is a pure function of (seed, epoch, index): resumable and
    identical across process counts and worker counts."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed = dataset, seed

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        i, epoch = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((self.seed * 1_000_003 + epoch) * 10_000_019 + i)
            return self.dataset[i]


# ---------------------------------------------------------------- checkpoints


def _rng_state() -> dict:
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "numpy": torch.from_numpy(np_state[1].astype(np.int64)),
             "numpy_pos": int(np_state[2]), "python": list(random.getstate()[1])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_atomic(obj, path: Path) -> None:
    """torch.save to a temporary file, then rename: a kill never leaves a half-written checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


# ---------------------------------------------------------------- evaluation


def _input_size(model: nn.Module) -> Optional[int]:
    return getattr(getattr(model, "module", model), "input_size", None)


def _full_view(dataset: Dataset) -> Dataset:
    """For 10-crop evaluation: the same images uncropped (the whole cached square of an ImageTensors)."""
    from cnnvis.data import ImageTensors

    if isinstance(dataset, ImageTensors):
        return ImageTensors(dataset.images, dataset.idx, dataset.images.images.shape[1], train=False)
    return dataset


def _ten_crops(x: torch.Tensor, size: int) -> torch.Tensor:
    """(N, 3, S, S) -> (10, N, 3, size, size): four corners and the centre, and their mirror images."""
    from torchvision.transforms.functional import ten_crop

    return torch.stack(ten_crop(x, [size, size]))


@torch.no_grad()
def _eval_sums(model, dataset, device, batch_size, ten_crop, rank=0, world=1, num_workers=0, amp=False,
               channels_last=False) -> list[float]:
    """[loss sum, top-1 hits, top-5 hits, count] over this rank's share (every world-th image)."""
    size = _input_size(model)
    data = _full_view(dataset) if ten_crop else dataset
    share = torch.utils.data.Subset(data, list(range(rank, len(data), world)))
    loader = DataLoader(share, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    was_training = model.training
    model.eval()
    sums = [0.0, 0.0, 0.0, 0.0]
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        views = _ten_crops(x, size) if ten_crop else [x if size is None else _center(x, size)]
        probs = 0
        for v in views:
            if channels_last:
                v = v.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, enabled=amp, dtype=_amp_dtype(device)):
                probs = probs + F.softmax(model(v).float(), dim=1)
        probs = probs / len(views)
        k = min(5, probs.shape[1])
        top = probs.topk(k, dim=1).indices
        sums[0] += float(F.nll_loss(probs.clamp_min(1e-12).log(), y, reduction="sum"))
        sums[1] += float((top[:, 0] == y).sum())
        sums[2] += float((top == y[:, None]).any(1).sum())
        sums[3] += len(y)
    model.train(was_training)
    return sums


def _center(x: torch.Tensor, size: int) -> torch.Tensor:
    from cnnvis.data import center_crop

    return center_crop(x, size) if x.shape[-1] > size else x


def _metrics(sums) -> dict:
    loss, top1, top5, n = sums
    n = max(n, 1)
    return {"loss": loss / n, "top1": top1 / n, "top5": top5 / n}


def evaluate(model: nn.Module, dataset: Dataset, device, batch_size: int = 128, ten_crop: bool = False,
             num_workers: int = 0) -> dict:
    """Mean cross-entropy, top-1 and top-5 accuracy on ``dataset`` (centre crop, or the average of the
    softmax over 10 crops); in a distributed run each process evaluates a share and the sums are reduced."""
    device = torch.device(device)
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    return _metrics(_all_sum(_eval_sums(model, dataset, device, batch_size, ten_crop, rank, world, num_workers),
                             device))


def _amp_dtype(device) -> torch.dtype:
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


# ---------------------------------------------------------------- training


def select_trainable(model: nn.Module, prefixes: Optional[list[str]]) -> list[nn.Parameter]:
    """Freeze every parameter whose name starts with none of ``prefixes`` (None: train all)."""
    named = list(model.named_parameters())
    if prefixes is None:
        return [p for _, p in named if p.requires_grad]
    for prefix in prefixes:
        if not any(name.startswith(prefix) for name, _ in named):
            tops = sorted({name.split(".")[0] for name, _ in named})
            raise ValueError(f"trainable prefix {prefix!r} matches no parameter; parameter names start with "
                             f"{', '.join(tops)} (e.g. {named[-1][0]!r})")
    params = []
    for name, p in named:
        p.requires_grad_(any(name.startswith(prefix) for prefix in prefixes))
        if p.requires_grad:
            params.append(p)
    return params


def _freeze_frozen_norms(model: nn.Module) -> None:
    """Batch-norm layers with no trainable parameter keep their statistics (a frozen backbone stays frozen)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(p.requires_grad for p in m.parameters()):
            m.eval()


def as_train_config(cfg) -> TrainConfig:
    """A TrainConfig from itself, a Hydra/OmegaConf node of one, or a dict."""
    if isinstance(cfg, TrainConfig):
        return cfg
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    return TrainConfig(**cfg)


def fit(model: nn.Module, train_set: Dataset, val_set: Optional[Dataset], cfg: TrainConfig, ckpt_dir, device=None,
        seed: int = 0, on_epoch_end: Optional[Callable[[pd.DataFrame], None]] = None) -> pd.DataFrame:
    """Train ``model`` in place; one row per epoch: epoch, lr, train_loss, train_top1, val_loss, val_top1,
    val_top5, seconds (the last epoch's val metrics by 10 crops when ``cfg.ten_crop``).

    Resumes from ``ckpt_dir/last.pt`` when present; keeps ``ckpt_dir/epoch_{n:03d}.pt`` (model weights) for
    the kept epochs. Under ``torchrun`` each process trains on its share of every global batch of
    ``cfg.batch_size`` images; only rank 0 writes. ``on_epoch_end`` gets the history so far (rank 0 only).
    """
    cfg = as_train_config(cfg)
    rank, world, device = distributed_context(device)
    if cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} is not divisible by the {world} processes; "
                         f"choose a multiple of {world}")
    ckpt_dir = Path(ckpt_dir)
    last = ckpt_dir / "last.pt"
    keep = set(cfg.keep_epochs if cfg.keep_epochs is not None else scaled_keep_epochs(cfg.epochs))
    gpu = device.type == "cuda"
    amp, channels_last = cfg.amp and gpu, cfg.channels_last and gpu

    torch.manual_seed(seed)
    if cfg.paper_init:
        paper_init_(model)
    elif cfg.kaiming_init:
        kaiming_init_(model, cfg.linear_init_std)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    params = select_trainable(model, cfg.trainable)
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, "min", cfg.plateau_factor, cfg.plateau_patience)
    scaler = torch.amp.GradScaler("cuda", enabled=amp and _amp_dtype(device) == torch.float16)

    history, epoch, step_in_epoch, sums = [], 0, 0, [0.0, 0.0, 0.0]
    if last.exists():
        state = load_checkpoint(last)
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as err:
            raise RuntimeError(f"{last} does not match this model ({err}); delete {ckpt_dir} or choose another "
                               f"checkpoint folder") from None
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        history, epoch, step_in_epoch, sums = state["history"], state["epoch"], state["step"], state["sums"]
        _set_rng_state(state["rng"][min(rank, len(state["rng"]) - 1)])
        if is_main_process():
            log.info("%s: finished run, nothing to train", last) if epoch >= cfg.epochs else \
                log.info("resuming %s at epoch %d step %d", last, epoch + 1, step_in_epoch)

    net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if gpu else None) if world > 1 else model
    data = SeededSamples(train_set, seed)
    local_batch = cfg.batch_size // world
    kill_after = int(os.environ.get(KILL_ENV, "0"))
    steps_here = 0

    def checkpoint(epoch_done: int, step: int, sums_now: list[float]) -> None:
        rngs = [None] * world
        if world > 1:
            dist.all_gather_object(rngs, _rng_state())
        else:
            rngs = [_rng_state()]
        if is_main_process():
            save_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                         "history": history, "epoch": epoch_done, "step": step, "sums": list(sums_now),
                         "rng": rngs, "config": asdict(cfg), "seed": seed}, last)
        if world > 1:
            dist.barrier()

    while epoch < cfg.epochs:
        start_time = time.time()
        sampler = EpochSampler(len(train_set), seed, epoch, rank, world, start=step_in_epoch * local_batch)
        loader = DataLoader(data, batch_size=local_batch, sampler=sampler, num_workers=cfg.num_workers,
                            pin_memory=gpu, generator=torch.Generator().manual_seed(seed + epoch))
        # (its own generator: the loader's worker seed must not draw from the global RNG that dropout uses)
        model.train()
        _freeze_frozen_norms(model)
        steps_per_epoch = math.ceil(math.ceil(len(train_set) / world) / local_batch)
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", initial=step_in_epoch, total=steps_per_epoch,
                   leave=False, disable=not is_main_process())
        for x, y in bar:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, enabled=amp, dtype=_amp_dtype(device)):
                logits = net(x)
                loss = F.cross_entropy(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if cfg.filter_rms is not None:
                renormalize_filters_(model, cfg.filter_rms)
            loss_value = float(loss.detach())
            sums = [sums[0] + loss_value * len(y), sums[1] + float((logits.detach().argmax(1) == y).sum()),
                    sums[2] + len(y)]
            step_in_epoch += 1
            steps_here += 1
            if cfg.checkpoint_every and step_in_epoch % cfg.checkpoint_every == 0 and step_in_epoch < steps_per_epoch:
                checkpoint(epoch, step_in_epoch, sums)
            if kill_after and steps_here >= kill_after:
                os.kill(os.getpid(), signal.SIGKILL)  # a test of resume: die mid-epoch like a killed job
            bar.set_postfix(loss=f"{loss_value:.3f}")
        epoch += 1
        train_loss, train_hits, seen = _all_sum(sums, device)
        final_ten_crop = cfg.ten_crop and epoch == cfg.epochs
        row = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"], "train_loss": train_loss / seen,
               "train_top1": train_hits / seen}
        if val_set is not None:
            val = _metrics(_all_sum(_eval_sums(model, val_set, device, cfg.eval_batch_size, final_ten_crop, rank,
                                               world, 0, amp, channels_last), device))
            row.update(val_loss=val["loss"], val_top1=val["top1"], val_top5=val["top5"])
        else:
            row.update(val_loss=float("nan"), val_top1=float("nan"), val_top5=float("nan"))
        scheduler.step(row["val_loss"] if val_set is not None else row["train_loss"])
        row["seconds"] = time.time() - start_time
        history.append(row)
        step_in_epoch, sums = 0, [0.0, 0.0, 0.0]
        if is_main_process() and epoch in keep:
            save_atomic({"model": model.state_dict(), "epoch": epoch}, ckpt_dir / f"epoch_{epoch:03d}.pt")
        checkpoint(epoch, 0, sums)
        if is_main_process():
            log.info("epoch %d/%d: %s", epoch, cfg.epochs,
                     ", ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch"))
            if on_epoch_end is not None:
                on_epoch_end(pd.DataFrame(history, columns=HISTORY_COLUMNS))
    return pd.DataFrame(history, columns=HISTORY_COLUMNS)


# ---------------------------------------------------------------- experiments' data and runs


def largest_classes(index, classes: Optional[int]):
    """The ``classes`` classes with the most images (ties by name), relabelled 0..classes-1; None: all."""
    if classes is None:
        return index
    counts = np.bincount(index.labels, minlength=len(index.classes))
    if classes > int((counts > 0).sum()):
        raise ValueError(f"experiment.classes={classes} but {index.name} has only {int((counts > 0).sum())} classes")
    chosen = sorted(np.flatnonzero(counts > 0), key=lambda c: (-counts[c], index.classes[c]))[:classes]
    return keep_classes(index, chosen)


def keep_classes(index, chosen):
    """Only the images of the class ids ``chosen``, relabelled 0..len-1 in name order."""
    from cnnvis.data import ImageIndex

    chosen = sorted(chosen, key=lambda c: index.classes[c])
    remap = {int(c): k for k, c in enumerate(chosen)}
    keep = [i for i, y in enumerate(index.labels) if int(y) in remap]
    return ImageIndex(index.name, [index.paths[i] for i in keep],
                      np.asarray([remap[int(index.labels[i])] for i in keep], dtype=np.int64),
                      [index.classes[c] for c in chosen])


def train_val_sets(cfg, classes: Optional[int] = None, input_size: Optional[int] = None,
                   class_filter: Optional[Callable] = None):
    """(images, train set, val set) of ``cfg.dataset``: the ``classes`` largest classes (of those whose name
    passes ``class_filter``), the papers' per-class split (``dataset.train_per_class`` / ``test_per_class`` /
    ``fold``, seeded by ``cfg.seed``), images decoded through the cache at ``dataset.resize`` (default
    input_size * 256 / 224). With ``cfg.smoke``: 3 classes of 4 images (2 train, 2 val)."""
    from cnnvis.data import ImageTensors, decode_to_cache, index_dataset, per_class_split, smoke_subset

    size = input_size or cfg.model.input_size
    index = index_dataset(cfg.dataset)
    if class_filter is not None:
        index = keep_classes(index, [c for c, name in enumerate(index.classes) if class_filter(name)])
    index = largest_classes(index, classes)
    train_per_class, test_per_class = cfg.dataset.train_per_class, cfg.dataset.test_per_class
    if cfg.smoke:
        index = largest_classes(smoke_subset(index, classes=3, per_class=4), 3)
        train_per_class, test_per_class = 2, 2
    train_idx, val_idx = per_class_split(index.labels, train_per_class, test_per_class, cfg.dataset.fold, cfg.seed)
    keep = np.concatenate([train_idx, val_idx])
    images = decode_to_cache(index.select(np.sort(keep)), cfg.dataset.resize or round(size * 256 / 224),
                             getattr(cfg.dataset.resize_mode, "value", cfg.dataset.resize_mode), cfg.cache_dir,
                             cfg.dataset.num_workers)
    # positions in the decoded (sorted, kept) set; no image is unreadable in the datasets used here
    position = {p: i for i, p in enumerate(images.paths)}
    train = [position[index.paths[i]] for i in train_idx if index.paths[i] in position]
    val = [position[index.paths[i]] for i in val_idx if index.paths[i] in position]
    return images, ImageTensors(images, train, size, train=True), ImageTensors(images, val, size)


def train_val_test_sets(cfg, classes: Optional[int] = None, input_size: Optional[int] = None,
                        class_filter: Optional[Callable] = None, val_per_class: int = 5):
    """(images, train, val, test): ``train_val_sets``'s held-out images split per class into ``val_per_class``
    for selection (the learning-rate plateau, a best epoch) and the rest for the reported numbers, so no
    held-out image is used twice. With ``cfg.smoke``: 1 val and 1 test image per class."""
    from cnnvis.data import ImageTensors

    images, train, held_out = train_val_sets(cfg, classes, input_size, class_filter)
    val, test = split_held_out(images.labels, held_out.idx, 1 if cfg.smoke else val_per_class, cfg.seed)
    if len(test) == 0:
        raise ValueError(f"no test images left after {val_per_class} validation images per class: raise "
                         f"dataset.test_per_class (now {cfg.dataset.test_per_class}) or lower val_per_class")
    return images, train, ImageTensors(images, val, held_out.size), ImageTensors(images, test, held_out.size)


def split_held_out(labels, idx, val_per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per class, ``val_per_class`` random positions of ``idx`` for validation and the rest for test (disjoint)."""
    labels, idx = np.asarray(labels), np.asarray(idx)
    rng = np.random.default_rng([seed, 7919])  # its own stream: the train/held-out split's draws stay unchanged
    val, test = [], []
    for y in np.unique(labels[idx]):
        members = rng.permutation(idx[labels[idx] == y])
        val += members[:val_per_class].tolist()
        test += members[val_per_class:].tolist()
    return np.sort(np.asarray(val, dtype=np.int64)), np.sort(np.asarray(test, dtype=np.int64))


class ShuffledLabels(Dataset):
    """The data randomization test's training set (Zhang et al. 2017, Adebayo et al. 2018): every image keeps
    its augmentation, the labels are permuted among the images (seeded), so class frequencies stay and the
    link between an image and its label is gone."""

    def __init__(self, dataset: Dataset, labels, seed: int = 0):
        self.dataset = dataset
        self.labels = np.random.default_rng([seed, 104_729]).permutation(np.asarray(labels))

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        return self.dataset[i][0], int(self.labels[i])


def run_dir(root, tag: str, model: nn.Module, data_key: dict, cfg: TrainConfig, seed: int) -> Path:
    """``root/<tag>-<hash>``: one folder per (architecture, data, recipe, seed), so experiments that train the
    same thing share (and resume) one run."""
    import hashlib
    import json

    recipe = {k: v for k, v in asdict(as_train_config(cfg)).items()
              if k not in ("num_workers", "amp", "channels_last", "checkpoint_every", "eval_batch_size", "keep_epochs")}
    blob = json.dumps({"model": str(model), "data": data_key, "train": recipe, "seed": seed}, sort_keys=True,
                      default=str)
    return Path(root) / f"{tag}-{hashlib.sha1(blob.encode()).hexdigest()[:10]}"


def data_key(cfg, classes: Optional[int]) -> dict:
    d = cfg.dataset
    return {"dataset": d.name, "classes": classes, "train_per_class": d.train_per_class,
            "test_per_class": d.test_per_class, "fold": d.fold, "resize": d.resize, "smoke": cfg.smoke,
            "split_seed": cfg.seed, "input_size": cfg.model.input_size}


def held_out_fingerprint(dataset) -> Optional[str]:
    """A short hash of a validation set's image positions (None without one): runs that select on different
    images do not share a checkpoint folder."""
    import hashlib

    if dataset is None:
        return None
    return hashlib.sha1(np.asarray(dataset.idx, dtype=np.int64).tobytes()).hexdigest()[:10]


def smoke_recipe(cfg: TrainConfig, smoke: bool) -> TrainConfig:
    """``smoke=true``: 2 epochs, no loader workers (the run ends in seconds)."""
    cfg = as_train_config(cfg)
    if not smoke:
        return cfg
    from dataclasses import replace

    return replace(cfg, epochs=min(cfg.epochs, 2), num_workers=0, keep_epochs=None)


def train_variant(build: Callable[[], nn.Module], tag: str, cfg, train_set, val_set, recipe: TrainConfig, seed: int,
                  classes: Optional[int], on_epoch_end=None):
    """Build a model under ``seed`` and train it (or resume / reuse its finished run) in its ``run_dir``;
    returns (model, history, checkpoint folder)."""
    torch.manual_seed(seed)
    model = build()
    key = {**data_key(cfg, classes), "val_images": held_out_fingerprint(val_set)}  # the plateau reads val
    ckpt = run_dir(cfg.experiment.checkpoint_root, f"{tag}_{cfg.dataset.name}", model, key, recipe, seed)
    device = None if cfg.device == "auto" else cfg.device
    history = fit(model, train_set, val_set, recipe, ckpt, device, seed, on_epoch_end=on_epoch_end)
    return model, history, ckpt
