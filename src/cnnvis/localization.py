"""Scoring saliency maps: boxes from maps (CAM / Grad-CAM rule), IoU, the pointing game, Average Drop and
Increase in Confidence (Grad-CAM++), and deletion / insertion curves (RISE).

Maps are (H, W) or (N, H, W) at the image's size; boxes are (x0, y0, x1, y1) in pixels, x1 / y1 exclusive.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from torchvision.transforms.functional import gaussian_blur


def box_from_map(saliency, threshold: float = 0.2) -> np.ndarray:
    """Zhou et al. 2016: keep the pixels above ``threshold`` x the map's maximum, box the largest
    8-connected component (0.2 in the CAM paper, 0.15 in Grad-CAM's)."""
    m = np.asarray(saliency.detach().cpu() if isinstance(saliency, torch.Tensor) else saliency, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"box_from_map takes one (H, W) map, got shape {m.shape}")
    top = m.max()
    if not np.isfinite(top) or top <= 0 or m.min() == top:  # nothing stands out: the whole image
        return np.array([0, 0, m.shape[1], m.shape[0]], dtype=np.float64)
    labels, n = ndimage.label(m >= threshold * top, structure=np.ones((3, 3)))
    largest = 1 + int(np.argmax(ndimage.sum_labels(np.ones_like(m), labels, index=np.arange(1, n + 1))))
    ys, xs = np.nonzero(labels == largest)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float64)


def iou(a, b) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def localized(saliency, box, threshold: float, min_iou: float = 0.5) -> bool:
    """The papers' criterion: the map's box overlaps the ground truth with IoU >= 0.5."""
    return iou(box_from_map(saliency, threshold), box) >= min_iou


def pointing_hit(saliency, box, tolerance: float = 15.0) -> bool:
    """Zhang et al. 2016's pointing game: the map's maximum lies within ``tolerance`` pixels of the box."""
    m = np.asarray(saliency.detach().cpu() if isinstance(saliency, torch.Tensor) else saliency)
    y, x = np.unravel_index(int(np.argmax(m)), m.shape)
    x, y = x + 0.5, y + 0.5  # pixel centre
    dx = max(box[0] - x, 0.0, x - box[2])
    dy = max(box[1] - y, 0.0, y - box[3])
    return bool(np.hypot(dx, dy) <= tolerance)


@torch.no_grad()
def probabilities(model, x: torch.Tensor, target: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """Softmax probability of each image's target class."""
    out = [torch.softmax(model(x[i:i + batch_size]), 1).gather(1, target[i:i + batch_size, None])[:, 0]
           for i in range(0, len(x), batch_size)]
    return torch.cat(out)


def confidence_change(model, x: torch.Tensor, maps: torch.Tensor, target) -> dict:
    """Chattopadhay et al. 2018: with Y the class probability on the image and O on the image times its
    map (scaled to [0, 1]), Average Drop = mean(max(0, Y - O) / Y) x 100 and Increase in Confidence =
    % of images with O > Y. Returns both and the per-image Y and O."""
    target = torch.as_tensor(target).flatten().expand(len(x))
    lo = maps.flatten(1).amin(1)[:, None, None]
    hi = maps.flatten(1).amax(1)[:, None, None]
    explanation = (maps - lo) / (hi - lo).clamp(min=1e-12)
    y = probabilities(model, x, target)
    o = probabilities(model, x * explanation[:, None], target)
    return {"average_drop": float(((y - o).clamp(min=0) / y).mean() * 100),
            "increase_in_confidence": float((o > y).float().mean() * 100), "y": y, "o": o}


def blurred(x: torch.Tensor) -> torch.Tensor:
    """RISE's insertion canvas: the image blurred with an 11-pixel Gaussian of sigma 5."""
    return gaussian_blur(x, kernel_size=[11, 11], sigma=[5.0, 5.0])


@torch.no_grad()
def causal_curve(model, image: torch.Tensor, saliency: torch.Tensor, target: int, mode: str,
                 steps: int = 32, batch_size: int = 33) -> torch.Tensor:
    """Petsiuk et al. 2018 (RISE): the target's probability as the most salient pixels are *deleted*
    (set to 0) from the image, or *inserted* into a blurred copy, in ``steps`` equal steps (steps + 1 points)."""
    if mode not in ("deletion", "insertion"):
        raise ValueError(f"mode must be 'deletion' or 'insertion', got {mode!r}")
    c, h, w = image.shape
    start, finish = (image, torch.zeros_like(image)) if mode == "deletion" else (blurred(image[None])[0], image)
    order = torch.argsort(saliency.flatten(), descending=True, stable=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(h * w)
    counts = torch.linspace(0, h * w, steps + 1).round()
    changed = (rank[None] < counts[:, None]).view(steps + 1, 1, h, w)  # step k: the top counts[k] pixels
    frames = torch.where(changed, finish, start)
    return probabilities(model, frames, torch.full((steps + 1,), int(target)), batch_size)


def auc(curve: torch.Tensor) -> float:
    """Area under a curve sampled at equal steps over [0, 1] (trapezoid, RISE's)."""
    curve = curve.double()
    return float((curve.sum() - curve[0] / 2 - curve[-1] / 2) / (len(curve) - 1))


# Trivial baselines: what a box or a point gets without looking at the image.

def full_image_box(height: int, width: int) -> np.ndarray:
    return np.array([0, 0, width, height], dtype=np.float64)


def centre_box(height: int, width: int, box_height: float, box_width: float) -> np.ndarray:
    """A ``box_height`` x ``box_width`` box centred in the image."""
    cy, cx = height / 2, width / 2
    return np.array([cx - box_width / 2, cy - box_height / 2, cx + box_width / 2, cy + box_height / 2])


def centre_boxes_left_out(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """For each image, the centred box whose width and height are the mean over the *other* images' boxes
    (leave-one-out, so no image's own box informs its baseline)."""
    boxes = np.asarray(boxes, dtype=np.float64)
    if len(boxes) < 2:
        raise ValueError("the leave-one-out centre box needs at least 2 boxed images")
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    mean_w = (w.sum() - w) / (len(w) - 1)
    mean_h = (h.sum() - h) / (len(h) - 1)
    return np.stack([centre_box(height, width, bh, bw) for bh, bw in zip(mean_h, mean_w)])


def centre_point_map(height: int, width: int) -> torch.Tensor:
    """A map whose maximum is the image's centre (a cone): the pointing game's centre-point baseline, and a
    map that ranks pixels by distance from the centre for the faithfulness metrics."""
    ys = torch.arange(height, dtype=torch.float32) + 0.5 - height / 2
    xs = torch.arange(width, dtype=torch.float32) + 0.5 - width / 2
    return -torch.hypot(ys[:, None], xs[None, :])
