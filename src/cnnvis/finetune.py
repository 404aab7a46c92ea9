"""Fine-tuning the top of a pretrained network on its trunk's cached outputs (the replication notes' protocol on a CPU).

The trunk (``features`` up to and including the block ``through``) is frozen and run once per image, on the
centre crop and on its mirror image; the blocks above it, the pooling and a new classifier are trained on those
maps, one of the two views drawn per image and epoch. At 224 px this makes an epoch of EfficientNet-Lite0's
stage6 + stage7 + head on Caltech-101 take about a minute instead of most of an hour. What it gives up: random
crops (only the flip survives) and the trunk's own adaptation.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from cnnvis.data import ImageSet
from cnnvis.transfer import cut_maps


def mirrored(images: ImageSet) -> ImageSet:
    """The same images flipped left to right (the one augmentation that survives caching)."""
    return ImageSet(images.name, np.ascontiguousarray(images.images[:, :, ::-1]), images.labels, images.classes,
                    images.paths, images.sizes, images.resize_mode, images.skipped)


def block_names(model: nn.Module) -> list[str]:
    return list(model.features._modules)


class Top(nn.Module):
    """What a network computes above its block ``through``: the later blocks, the pooling and the classifier."""

    def __init__(self, model: nn.Module, through: str):
        super().__init__()
        names = block_names(model)
        if through not in names:
            raise ValueError(f"unknown block {through!r}; model.features has {', '.join(names)} "
                             "(set experiment.frozen_through)")
        rest = names[names.index(through) + 1:]
        self.blocks = nn.Sequential(*(model.features._modules[n] for n in rest))
        self.pool, self.classifier = model.pool, model.classifier

    def forward(self, maps):
        return self.classifier(self.pool(self.blocks(maps)))


def trunk_maps(model: nn.Module, images: ImageSet, through: str, input_size: int, cache_dir: str | None, tag: str,
               device="cpu", batch_size: int = 32) -> torch.Tensor:
    """(N, C, h, w) outputs of the block ``through`` for every image's centre crop, through the feature cache."""
    layer = f"features.{through}"
    return cut_maps(model, images, [layer], input_size, cache_dir, tag, device, batch_size)[layer]


class CachedViews(Dataset):
    """(maps, label) pairs of the images ``idx``: a random one of the two views when training, else the centre."""

    def __init__(self, centre: torch.Tensor, mirror: torch.Tensor, labels, idx, train: bool = False):
        self.centre, self.mirror, self.labels = centre, mirror, np.asarray(labels)
        self.idx, self.train = np.asarray(idx), train

    def __len__(self):
        return len(self.idx)

    def __getitem__(self, i):
        j = self.idx[i]
        view = self.mirror if self.train and torch.rand(()) < 0.5 else self.centre
        return view[j], int(self.labels[j])
