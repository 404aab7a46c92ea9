"""Top-k activation mining: one streaming pass that keeps, for every feature map of the chosen layers,
its k strongest activations over a dataset (Zeiler & Fergus Fig. 2's top 9, Girshick's top regions).

Each image contributes at most one entry per feature map, its strongest location (the papers show k
different images per map). Memory is channels x k per layer: a batch's per-channel maxima are merged into
the running top-k with one stable sort over the concatenation, so ties keep the lower image index and any split of
the images into shards (``cnnvis.shards``) merges to the same list; activations are never all stored, and the
forward pass stops at the deepest requested layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from cnnvis.hooks import forward_recorded, record_activations
from cnnvis.models import get_layer
from cnnvis.shards import ONE_PROCESS, ShardPlan, merge_topk

FIELDS = ("values", "image_index", "y", "x")


@dataclass
class TopK:
    """The k strongest activations of every channel of one layer, each (channels, k), sorted descending."""

    values: torch.Tensor
    image_index: torch.Tensor
    y: torch.Tensor
    x: torch.Tensor

    @property
    def k(self) -> int:
        return self.values.shape[1]

    def location(self, channel: int, rank: int) -> tuple[int, int, int]:
        """(image index, y, x) of ``channel``'s ``rank``-th strongest activation."""
        return int(self.image_index[channel, rank]), int(self.y[channel, rank]), int(self.x[channel, rank])


def _batches(images, positions, size, batch_size):
    """(image indices, float batch) over ``positions`` of an ImageSet or ImageFiles (``.batches``) or of an
    (N, C, H, W) tensor."""
    if not isinstance(images, torch.Tensor):
        yield from images.batches(positions, size, batch_size)
        return
    for start in range(0, len(positions), batch_size):
        chunk = positions[start:start + batch_size]
        yield chunk, images[torch.as_tensor(chunk)]


def _merge(best, act: torch.Tensor, image_index: torch.Tensor, k: int):
    """The running (values, flat index over (image, y, x)), each (C, k), merged with a batch's maxima.
    The max over space comes first (cheap); the argmax is taken only for the maps that enter the top-k.
    A stable sort of [running list, batch in image order] keeps ties in image order."""
    b, c, h, w = act.shape
    peak = act.amax((2, 3)).T  # (C, B): each image's strongest unit per channel
    kept = 0 if best is None else best[0].shape[1]
    values = peak if best is None else torch.cat([best[0], peak], 1)
    top, order = values.sort(dim=1, descending=True, stable=True)
    top, order = top[:, :k], order[:, :k]
    index = torch.zeros_like(order)
    if kept:
        index = best[1].gather(1, order.clamp(max=kept - 1))
    ch, rank = (order >= kept).nonzero(as_tuple=True)  # entries won by this batch
    image = order[ch, rank] - kept
    where = act[image, ch].flatten(1).argmax(1)
    index[ch, rank] = image_index.to(act.device)[image] * (h * w) + where
    return top, index


def _shard_top(model, images, positions, names, k, batch_size, size, device, progress) -> dict[str, np.ndarray]:
    """The top-``k`` of every channel over the images at ``positions``, as arrays '<layer>:<field>' (FIELDS)."""
    best: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # layer -> (values, flat index over (image, y, x))
    shapes: dict[str, tuple[int, int]] = {}
    batches = _batches(images, positions, size, batch_size)
    with record_activations(model, names, stop_early=True) as store:
        for idx, x in tqdm(batches, total=-(-len(positions) // batch_size), desc="mining top activations",
                           disable=not progress, leave=False):
            forward_recorded(model, x.to(device), store)
            for name in names:
                act = store[name]
                if act.ndim == 2:  # fully connected: one location
                    act = act[:, :, None, None]
                shapes[name] = tuple(act.shape[-2:])
                best[name] = _merge(best.get(name), act, torch.as_tensor(idx), k)
    arrays = {}
    for name, (values, flat) in best.items():
        h, w = shapes[name]
        flat = flat.cpu().numpy()
        arrays.update({f"{name}:values": values.cpu().numpy(), f"{name}:image_index": flat // (h * w),
                       f"{name}:y": (flat % (h * w)) // w, f"{name}:x": flat % w})
    return arrays


def _merged(parts, names, k) -> dict[str, TopK]:
    result = {}
    for name in names:
        top = merge_topk([{f: p[f"{name}:{f}"] for f in FIELDS} for p in parts], k)
        result[name] = TopK(*(torch.from_numpy(top[f]) for f in FIELDS))
    return result


@torch.no_grad()
def top_activations(model: nn.Module, images, layers, k: int = 9, batch_size: int = 32, size: int | None = None,
                    device=None, progress: bool = True, plan: ShardPlan = ONE_PROCESS) -> dict[str, TopK] | None:
    """For every channel of each layer in ``layers``: its ``k`` strongest activations over ``images``
    (an ImageSet or ImageFiles, center-cropped to ``size``, default the model's ``input_size``; or a float tensor),
    as value, image index and spatial location, at most one per image. ``k`` is capped at the image count.
    ``plan``: the shards this process mines and whether it merges them (None when it only writes its shards); shards
    are whole batches, so every split computes the same activations."""
    names = [layers] if isinstance(layers, str) else list(layers)
    for name in names:
        get_layer(model, name)
    if len(images) == 0:
        raise ValueError("no images to mine activations from")
    k = min(k, len(images))
    size = size or getattr(model, "input_size", None)
    device = device or next(model.parameters()).device
    return plan.run("mining-" + "-".join(names), len(images),
                    lambda positions: _shard_top(model, images, positions, names, k, batch_size, size, device, progress),
                    lambda parts: _merged(parts, names, k), block=batch_size)
