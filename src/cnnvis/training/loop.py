"""``fit``, one training loop for one process or many (``torchrun`` -> DistributedDataParallel), and ``evaluate``.

Resume is exact: the sample order of an epoch is a seeded permutation of (seed, epoch) (``EpochSampler``), each
sample's augmentation is seeded by (seed, epoch, index) (``SeededSamples``), and the checkpoint holds the model,
optimizer, scheduler, the partial epoch's sums and the RNG states (dropout).
"""

from __future__ import annotations

import logging
import math
import os
import signal
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Optional

import pandas as pd
import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from cnnvis.run_record import RunRecord, trained_by
from cnnvis.training.checkpoints import _rng_state, _set_rng_state, load_checkpoint, save_atomic
from cnnvis.training.recipe import (TrainConfig, as_train_config, init_weights_, renormalize_filters_,
                                    scaled_keep_epochs)

log = logging.getLogger(__package__)  # "cnnvis.training", the name run.log's lines carried before the split


KILL_ENV = "CNNVIS_TRAIN_KILL_AFTER_STEPS"  # tests: SIGKILL this process after N optimizer steps
HISTORY_COLUMNS = ["epoch", "lr", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5", "seconds"]


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


def fit(model: nn.Module, train_set: Dataset, val_set: Optional[Dataset], cfg: TrainConfig, ckpt_dir, device=None,
        seed: int = 0, on_epoch_end: Optional[Callable[[pd.DataFrame], None]] = None,
        record: Optional[RunRecord] = None) -> pd.DataFrame:
    """Train ``model`` in place; one row per epoch: epoch, lr, train_loss, train_top1, val_loss, val_top1,
    val_top5, seconds (the last epoch's val metrics by 10 crops when ``cfg.ten_crop``).

    Resumes from ``ckpt_dir/last.pt`` when present; keeps ``ckpt_dir/epoch_{n:03d}.pt`` (model weights) for
    the kept epochs. Under ``torchrun`` each process trains on its share of every global batch of
    ``cfg.batch_size`` images; only rank 0 writes. ``on_epoch_end`` gets the history so far (rank 0 only).
    With ``record`` (the run's ``RunRecord``), each checkpoint written names the runs that trained it in its sidecar
    (``record.run`` after those that trained what it resumed), and ``last.pt`` ends in ``record.checkpoints``, trained
    here, resumed or reused.
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
    init_weights_(model, cfg)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    params = select_trainable(model, cfg.trainable)
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, "min", cfg.plateau_factor, cfg.plateau_patience)
    scaler = torch.amp.GradScaler("cuda", enabled=amp and _amp_dtype(device) == torch.float16)

    history, epoch, step_in_epoch, sums = [], 0, 0, [0.0, 0.0, 0.0]
    earlier_runs = []  # the runs that trained what this one resumes, for the sidecars it writes
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
        earlier_runs = trained_by(last) or [{"run_id": "unknown", "from_epoch": 0, "to_epoch": epoch}]
        if is_main_process():
            log.info("%s: finished run, nothing to train", last) if epoch >= cfg.epochs else \
                log.info("resuming %s at epoch %d step %d", last, epoch + 1, step_in_epoch)

    first_epoch = epoch

    def runs_until(epoch_done: int) -> Optional[list[dict]]:
        """The sidecar's trained_by for a checkpoint written after ``epoch_done`` epochs (None without a record)."""
        if record is None:
            return None
        return earlier_runs + [{**record.run, "from_epoch": first_epoch, "to_epoch": epoch_done}]

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
                         "rng": rngs, "config": asdict(cfg), "seed": seed}, last, runs_until(epoch_done))
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
            save_atomic({"model": model.state_dict(), "epoch": epoch}, ckpt_dir / f"epoch_{epoch:03d}.pt",
                        runs_until(epoch))
        checkpoint(epoch, 0, sums)
        if is_main_process():
            log.info("epoch %d/%d: %s", epoch, cfg.epochs,
                     ", ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch"))
            if on_epoch_end is not None:
                on_epoch_end(pd.DataFrame(history, columns=HISTORY_COLUMNS))
    if record is not None and is_main_process():
        record.add_checkpoint(last)
    return pd.DataFrame(history, columns=HISTORY_COLUMNS)
