"""Occlusion sensitivity (Zeiler & Fergus 2014, Sec. 4.2 and Fig. 7): slide a grey square over an image and
record, for every position of the square, how one feature map and the classifier respond.

All occluded copies of the image are built and evaluated in batches, and one forward pass per batch gives
both the chosen layer's activation (read by a forward hook) and the class probabilities.

    maps = occlusion_map(model, image, layer="head", size=48, stride=8, fill=images.mean_color())
    maps.probability  # (rows, cols): probability of the target class with the square at each position

The paper gives no occluder size or stride; the defaults below (a 48-px square every 8 px on a 224-px
image: 23 x 23 positions) resolve object parts while one map costs ~530 forward passes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from cnnvis.hooks import record_activations
from cnnvis.models import IMAGENET_MEAN

DEFAULT_SIZE = 48
DEFAULT_STRIDE = 8
# EfficientNet-Lite0 on 2 CPU threads: small batches are as fast per image as large ones and use less memory
DEFAULT_BATCH_SIZE = 16


@dataclass
class OcclusionMaps:
    """What the network did with the occluder at each position (row ``i``, column ``j``: square at ys[i], xs[j]).

    ``activation`` is None when no layer was asked for. The ``clean_*`` fields are the unoccluded image's.
    """

    activation: torch.Tensor | None  # (rows, cols) total activation of `channel` at `layer`
    probability: torch.Tensor  # (rows, cols) softmax probability of `target`
    top_class: torch.Tensor  # (rows, cols) most probable class
    ys: torch.Tensor  # (rows,) top edge of the square in each row
    xs: torch.Tensor  # (cols,) left edge of the square in each column
    size: int
    stride: int
    layer: str | None
    channel: int | None
    target: int
    clean_activation: float | None
    clean_probability: float
    clean_top_class: int
    engine: str = "full"  # which path computed the maps: "full", "incremental" or "approximate"

    @property
    def centers(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixel coordinates (y, x) of the square's centre in each row and column."""
        return self.ys + self.size / 2, self.xs + self.size / 2

    def most_sensitive(self) -> tuple[int, int]:
        """(row, col) where the square lowers the target's probability most."""
        flat = int(self.probability.argmin())
        return divmod(flat, self.probability.shape[1])


def occluder_positions(height: int, width: int, size: int, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top and left edges of every placement of a ``size`` square that lies wholly inside the image
    (the placements of Captum's ``Occlusion`` with the same window and stride)."""
    if size < 1 or stride < 1:
        raise ValueError(f"occluder size ({size}) and stride ({stride}) must be positive")
    if size > min(height, width):
        raise ValueError(f"occluder size {size} exceeds the {height}x{width} image: choose size <= {min(height, width)}")
    return torch.arange(0, height - size + 1, stride), torch.arange(0, width - size + 1, stride)


def occlude(image: torch.Tensor, corners: torch.Tensor, size: int, fill: torch.Tensor) -> torch.Tensor:
    """Copies of ``image`` (3, H, W), copy ``k`` with a ``size`` square of colour ``fill`` at ``corners[k]`` = (y, x)."""
    batch = image.unsqueeze(0).repeat(len(corners), 1, 1, 1)
    patch = fill.to(image).view(-1, 1, 1)
    for k, (y, x) in enumerate(corners.tolist()):
        batch[k, :, y:y + size, x:x + size] = patch
    return batch


def _fill_color(fill, channels: int) -> torch.Tensor:
    if fill is None:  # ImageNet's mean colour: the grey of a model trained on it
        return torch.tensor(IMAGENET_MEAN)
    fill = torch.as_tensor(fill, dtype=torch.float32).flatten()
    if fill.numel() == 1:
        fill = fill.repeat(channels)
    if fill.numel() != channels:
        raise ValueError(f"fill has {fill.numel()} values; give one grey level or one value per channel ({channels})")
    return fill


def _channel_totals(output: torch.Tensor) -> torch.Tensor:
    """Total activation of each channel per image: (B, C, h, w) or (B, C) -> (B, C)."""
    return output.flatten(2).sum(2) if output.ndim > 2 else output


@torch.no_grad()
def _evaluate(model: nn.Module, batch: torch.Tensor, layer: str | None, channels_last: bool):
    """Logits and, when a layer is asked for, its per-channel totals, from one forward pass."""
    if channels_last:
        batch = batch.contiguous(memory_format=torch.channels_last)
    if layer is None:
        return model(batch), None
    with record_activations(model, [layer]) as store:
        logits = model(batch)
        return logits, _channel_totals(store[layer])


@torch.no_grad()
def occlusion_map(model: nn.Module, image: torch.Tensor, layer: str | None = None, channel: int | None = None,
                  target: int | None = None, size: int = DEFAULT_SIZE, stride: int = DEFAULT_STRIDE,
                  batch_size: int = DEFAULT_BATCH_SIZE, fill=None, channels_last: bool = False,
                  progress: bool = False, incremental: bool = False,
                  approximate: float | None = None) -> OcclusionMaps:
    """Slide a ``fill``-coloured ``size`` square with ``stride`` over ``image`` (3, H, W) in [0, 1].

    ``layer``: a readable layer name (or module path) whose ``channel`` is totalled per position; ``channel``
    None picks the channel with the largest total on the unoccluded image. ``target`` None: the class the
    model predicts for the unoccluded image. ``fill`` None: ImageNet's mean colour (pass the dataset's
    ``ImageSet.mean_color()``). ``channels_last`` feeds the batches in NHWC memory format.
    ``incremental``: recompute only the region each occluder changes (``cnnvis.incremental``; same maps, several
    times fewer operations); ``approximate`` (with it): Krypton's projective-field threshold, a fraction in (0, 1].
    """
    if image.ndim != 3:
        raise ValueError(f"image must be one (3, H, W) tensor, got shape {tuple(image.shape)}")
    model.eval()
    device = next(model.parameters()).device
    image = image.to(device)
    fill = _fill_color(fill, image.shape[0])
    ys, xs = occluder_positions(image.shape[1], image.shape[2], size, stride)

    clean_logits, clean_totals = _evaluate(model, image[None], layer, channels_last)
    if layer is not None:
        n_channels = clean_totals.shape[1]
        if channel is None:
            channel = int(clean_totals[0].argmax())
        elif not 0 <= channel < n_channels:
            raise ValueError(f"channel {channel} out of range: layer {layer!r} has {n_channels} channels")
    n_classes = clean_logits.shape[1]
    if target is None:
        target = int(clean_logits[0].argmax())
    elif not 0 <= target < n_classes:
        raise ValueError(f"target class {target} out of range: the model has {n_classes} classes")

    corners = torch.cartesian_prod(ys, xs)  # row-major: all columns of row 0, then row 1, ...
    if incremental:
        from cnnvis.incremental import IncrementalOcclusion

        engine = IncrementalOcclusion(model, image, layer, channel, approximate=approximate)
    activation, probability, top_class = [], [], []
    starts = range(0, len(corners), batch_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="occlusion", leave=False)
    for start in starts:
        if incremental:  # the channel's map (B, h, w), or its value for a layer without space
            logits, act = engine(*corners[start:start + batch_size].T, size, fill)
            if act is not None:
                activation.append(act.flatten(1).sum(1) if act.ndim > 1 else act)
        else:
            logits, totals = _evaluate(model, occlude(image, corners[start:start + batch_size], size, fill),
                                       layer, channels_last)
            if totals is not None:
                activation.append(totals[:, channel])
        probability.append(logits.softmax(1)[:, target])
        top_class.append(logits.argmax(1))

    grid = (len(ys), len(xs))
    return OcclusionMaps(
        activation=torch.cat(activation).view(grid).cpu() if layer is not None else None,
        probability=torch.cat(probability).view(grid).cpu(),
        top_class=torch.cat(top_class).view(grid).cpu(),
        ys=ys, xs=xs, size=size, stride=stride, layer=layer, channel=channel, target=target,
        clean_activation=float(clean_totals[0, channel]) if layer is not None else None,
        clean_probability=float(clean_logits.softmax(1)[0, target]),
        clean_top_class=int(clean_logits[0].argmax()),
        engine=("approximate" if approximate is not None else "incremental") if incremental else "full",
    )
