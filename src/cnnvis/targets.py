"""What an attribution explains: small callables on one image's model output.

The contract: a target is a callable ``target(output) -> scalar tensor`` where ``output`` is ONE image's model
output (a classifier's (K,) logits, a segmenter's (K, H, W) logits, a detector's dict {boxes, labels, scores}), and
the scalar is differentiable in it. ``method.attribute(x, target)`` takes None (each image's top-1 class), an int
(that class's pre-softmax score, the fast path), a sequence of ints (one per image), one callable (the same for
every image) or a sequence of callables (one per image). The four kinds here follow pytorch-grad-cam's
``ClassifierOutputTarget``, ``ClassifierOutputSoftmaxTarget``, ``SemanticSegmentationTarget`` and
``FasterRCNNBoxScoreTarget``, so maps agree with its maps.
"""

from __future__ import annotations

import torch
import torchvision


def _as_tensor(value, dtype=None) -> torch.Tensor:
    return value.detach().clone() if isinstance(value, torch.Tensor) else torch.as_tensor(value, dtype=dtype)


class ClassScore:
    """The pre-softmax score of ``category``: what an int target means."""

    def __init__(self, category: int):
        self.category = int(category)

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return output[self.category]

    def __repr__(self):
        return f"ClassScore({self.category})"


class ClassProbability:
    """The softmax probability of ``category`` (pytorch-grad-cam's ClassifierOutputSoftmaxTarget)."""

    def __init__(self, category: int):
        self.category = int(category)

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return torch.softmax(output, dim=-1)[self.category]

    def __repr__(self):
        return f"ClassProbability({self.category})"


class SegmentationRegion:
    """The sum of ``category``'s logits over the pixels of ``mask`` (H, W) in a (K, H, W) segmentation output
    (pytorch-grad-cam's SemanticSegmentationTarget): why the model calls this region this class."""

    def __init__(self, category: int, mask):
        self.category = int(category)
        self.mask = _as_tensor(mask, torch.float32).float()
        if self.mask.ndim != 2:
            raise ValueError(f"SegmentationRegion needs an (H, W) mask, got shape {tuple(self.mask.shape)}")

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        if output.ndim != 3 or output.shape[-2:] != self.mask.shape:
            raise ValueError(f"SegmentationRegion's mask is {tuple(self.mask.shape)} but the output of one image is "
                             f"{tuple(output.shape)}: it needs a segmenter's (K, H, W) logits at the mask's size")
        return (output[self.category] * self.mask.to(output.device)).sum()

    def __repr__(self):
        return f"SegmentationRegion({self.category}, mask of {int(self.mask.sum())} px)"


class DetectionBox:
    """For each reference box and label, the detection that overlaps it most: its IoU plus its class score, when
    the IoU exceeds ``iou_threshold`` and the label matches, else nothing; summed over the reference boxes
    (pytorch-grad-cam's FasterRCNNBoxScoreTarget) on one image's torchvision detection dict."""

    def __init__(self, labels, boxes, iou_threshold: float = 0.5):
        self.labels = _as_tensor(labels, torch.long).long().flatten()
        self.boxes = _as_tensor(boxes, torch.float32).float().reshape(-1, 4)
        if len(self.labels) != len(self.boxes):
            raise ValueError(f"DetectionBox got {len(self.labels)} labels for {len(self.boxes)} boxes: one per box")
        self.iou_threshold = float(iou_threshold)

    def __call__(self, output: dict) -> torch.Tensor:
        if not isinstance(output, dict) or not {"boxes", "labels", "scores"} <= set(output):
            raise ValueError("DetectionBox needs one image's detection dict {boxes, labels, scores} "
                             f"(a torchvision detector's output), got {type(output).__name__}")
        boxes = output["boxes"]
        total = torch.zeros((), device=boxes.device, dtype=boxes.dtype)
        if len(boxes) == 0:
            return total
        ious = torchvision.ops.box_iou(self.boxes.to(boxes), boxes)
        for row, label in zip(ious, self.labels.tolist()):
            best = row.argmax()
            if row[best] > self.iou_threshold and int(output["labels"][best]) == label:
                total = total + row[best] + output["scores"][best]
        return total

    def __repr__(self):
        return f"DetectionBox(labels={self.labels.tolist()}, iou_threshold={self.iou_threshold})"
