"""GAP surgery of Zhou et al. 2016 (CAM), Sec. 3: remove the layers after conv5, add a 3x3 convolution
(1024 units, stride 1, pad 1) + ReLU, global average pooling and a linear layer; ``extra_convs=2`` is the
paper's AlexNet*-GAP (two added convolutions, to recover AlexNet's accuracy). The conv trunk keeps its weights;
the added layers are freshly initialized. The layer feeding the pooling is named ``cam`` (CAM is exact there).
"""

from __future__ import annotations

import copy
from collections import OrderedDict

import torch
from torch import nn

from cnnvis.models import ImageClassifier, build_model

# the last conv layer kept by the surgery, per model
LAST_CONV = {"alexnet": "conv5", "zfnet": "conv5", "vgg16": "conv5_3"}
# variant name -> (base model, number of added 3x3 conv layers)
GAP_VARIANTS = {"alexnet-gap": ("alexnet", 1), "alexnet*-gap": ("alexnet", 2), "zfnet-gap": ("zfnet", 1),
                "vgg16-gap": ("vgg16", 1)}


def gap_network(model: ImageClassifier, num_classes: int | None = None, extra_convs: int = 1, width: int = 1024,
                last_layer: str | None = None) -> ImageClassifier:
    """A new GAP network: ``model``'s trunk up to ``last_layer`` (copied, weights kept) + ``extra_convs``
    3x3 convs of ``width`` units + global average pooling + linear (``num_classes``, default the model's)."""
    last_layer = last_layer or next((n for n in ("conv5", "conv5_3") if n in model.layers), None)
    if last_layer not in model.layers or not model.layers[last_layer].startswith("features."):
        raise ValueError(f"no conv layer {last_layer!r} to cut after; give last_layer= one of "
                         f"{', '.join(n for n, p in model.layers.items() if p.startswith('features.'))}")
    if extra_convs < 1:
        raise ValueError("the CAM paper adds at least one 3x3 conv layer (extra_convs >= 1)")
    child = model.layers[last_layer].split(".", 1)[1]
    names = list(model.features._modules)
    kept = names[:names.index(child) + 1]
    trunk = OrderedDict((n, copy.deepcopy(model.features._modules[n])) for n in kept)
    channels = [m.out_channels for n in kept for m in trunk[n].modules() if isinstance(m, nn.Conv2d)][-1]
    layers = {k: v for k, v in model.layers.items() if v.startswith("features.") and v.split(".")[1] in trunk}
    for i in range(1, extra_convs + 1):
        trunk[f"gap_conv{i}"] = nn.Conv2d(channels, width, 3, stride=1, padding=1)
        trunk[f"gap_relu{i}"] = nn.ReLU()
        layers[f"gap_conv{i}"] = f"features.gap_relu{i}"
        channels = width
    layers["cam"] = f"features.gap_relu{extra_convs}"
    classifier = nn.Sequential(OrderedDict(fc=nn.Linear(channels, num_classes or model.head.out_features)))
    layers["fc"] = "classifier.fc"
    return ImageClassifier(copy.deepcopy(model.normalize), nn.Sequential(trunk),
                           nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()), classifier, layers, model.input_size)


def build_gap_model(variant: str, num_classes: int = 1000, input_size: int = 224, pretrained: bool = False,
                    checkpoint: str | None = None) -> ImageClassifier:
    """``alexnet-gap``, ``alexnet*-gap``, ``zfnet-gap`` or ``vgg16-gap``, cut from the harness's model."""
    if variant not in GAP_VARIANTS:
        raise KeyError(f"unknown GAP variant {variant!r}; available: {', '.join(GAP_VARIANTS)}")
    base, extra = GAP_VARIANTS[variant]
    model = build_model(base, num_classes, pretrained, checkpoint, input_size)
    return gap_network(model, num_classes, extra, last_layer=LAST_CONV[base])


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def feeds_gap_head(model: nn.Module, layer: str) -> bool:
    """Whether ``layer`` is the last layer of ``model``'s conv trunk and only global average pooling and the linear
    head follow it: where CAM is exact (Zhou et al. 2016). Read from the structure, before any image runs."""
    if not isinstance(model, ImageClassifier):
        return False
    last = f"features.{list(model.features._modules)[-1]}"
    pools = [m for m in model.pool.modules() if not isinstance(m, (nn.Sequential, nn.Flatten))]
    global_pool = len(pools) == 1 and isinstance(pools[0], nn.AdaptiveAvgPool2d) and pools[0].output_size in (1, (1, 1))
    head_alone = all(m is model.head or isinstance(m, (nn.Sequential, nn.Dropout)) for m in model.classifier.modules())
    return model.layers.get(layer, layer) == last and global_pool and head_alone


# ---------------------------------------------------------------- surgery on a pretrained network (Zhou et al. Sec. 2)
#
# The pretrained trunk is frozen and its maps at each cut are computed once (cnnvis.transfer caches them); only the
# added layers are trained, on those maps: a 3x3 conv (``width`` units, stride 1, pad 1) + ReLU, global average
# pooling and a linear classifier. The uncut network's reference is its own last layer with a new linear classifier
# (for a GAP network such as EfficientNet-Lite0 its head conv + GAP + linear: CAM applies there too).

# Where each network is cut, shallowest first: the stages whose maps are finer than the last conv layer's, and it.
SURGERY_CUTS = {"efficientnet_lite0": ["stage4", "stage5", "stage6", "stage7"], "alexnet": ["conv3", "conv4", "conv5"],
                "vgg16": ["conv4_3", "conv5_1", "conv5_3"], "resnet18": ["layer3", "layer4"]}
# The uncut network's last feature layer, and whether it is a GAP network there (CAM applies).
UNCUT_LAYER = {"efficientnet_lite0": ("head", True), "resnet18": ("layer4", True), "alexnet": ("fc7", False),
               "vgg16": ("fc7", False)}


class GapHead(nn.Module):
    """The layers the surgery adds on a cut's (N, C, h, w) maps: 3x3 conv of ``width`` units + ReLU + GAP + linear;
    ``width=0``: GAP (when the input is a map) + linear only, the uncut network's own head with a new classifier."""

    def __init__(self, channels: int, num_classes: int, width: int = 256):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(channels, width, 3, stride=1, padding=1), nn.ReLU()) if width else nn.Identity()
        self.fc = nn.Linear(width or channels, num_classes)

    def features(self, maps):
        return self.conv(maps) if maps.ndim == 4 else maps

    def forward(self, maps):
        a = self.features(maps)
        return self.fc(a.mean((2, 3)) if a.ndim == 4 else a)

    def cam(self, maps, classes):
        """Zhou et al.'s class activation map sum_k w_ck a_k(x, y) at the maps' resolution, (N, h, w)."""
        a = self.features(maps)
        if a.ndim != 4:
            raise ValueError("CAM needs spatial maps; this head classifies vectors (a non-GAP network's fc layer)")
        return torch.einsum("nk,nkhw->nhw", self.fc.weight[torch.as_tensor(classes)], a)


def train_head(head: nn.Module, maps, labels, epochs: int = 30, lr: float = 1e-3, batch_size: int = 32,
               weight_decay: float = 5e-4, seed: int = 0):
    """Train ``head`` on cached maps with Adam (no augmentation: the maps are fixed); returns the history, one row
    per epoch: epoch, train_loss, train_top1, seconds (the shape ``cnnvis.gate.training_gate`` reads)."""
    import time

    import pandas as pd
    from torch.nn import functional as F
    from tqdm import tqdm

    maps, labels = torch.as_tensor(maps).float(), torch.as_tensor(labels).long()
    g = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    rows = []
    for epoch in tqdm(range(1, epochs + 1), desc="training the added layers", leave=False):
        start, loss_sum, hits = time.perf_counter(), 0.0, 0
        head.train()
        for idx in torch.randperm(len(labels), generator=g).split(batch_size):
            logits = head(maps[idx])
            loss = F.cross_entropy(logits, labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += float(loss.detach()) * len(idx)
            hits += int((logits.detach().argmax(1) == labels[idx]).sum())
        rows.append({"epoch": epoch, "train_loss": loss_sum / len(labels), "train_top1": hits / len(labels),
                     "seconds": time.perf_counter() - start})
    head.eval()
    return pd.DataFrame(rows)


@torch.no_grad()
def predict_head(head: nn.Module, maps, batch_size: int = 128) -> torch.Tensor:
    maps = torch.as_tensor(maps).float()
    return torch.cat([head(maps[i:i + batch_size]).argmax(1) for i in range(0, len(maps), batch_size)])


@torch.no_grad()
def head_cams(head: GapHead, maps, classes, size: int, batch_size: int = 128) -> torch.Tensor:
    """CAMs of ``classes`` (one per map) upsampled bilinearly to ``size`` x ``size`` pixels, (N, size, size)."""
    from torch.nn import functional as F

    maps, classes = torch.as_tensor(maps).float(), torch.as_tensor(classes).long()
    out = [F.interpolate(head.cam(maps[i:i + batch_size], classes[i:i + batch_size])[:, None], size=(size, size),
                         mode="bilinear", align_corners=False)[:, 0] for i in range(0, len(maps), batch_size)]
    return torch.cat(out)
