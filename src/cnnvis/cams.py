"""Class activation maps and gradient attributions, one verb for all: ``method.attribute(x, target)``.

``Attribution`` owns the forward hooks on the named layers (released on ``close()`` / leaving a ``with``
block, also when an error escapes it), the batching, and the choice of targets (pre-softmax scores; the
top-1 class when ``target`` is None; any callable of ``cnnvis.targets`` on one image's output: a class
probability, a segmentation region, a detection). A ``reshape`` turns a layer's output into (N, C, H, W) maps
(``cnnvis.reshapes``: token sequences, channels last, a detector's FPN levels); by default the model's own
``cam_reshape``. Each method is a short subclass with its paper's formula:

- ``CAM`` (Zhou et al. 2016): ``sum_k w_k^c A_k`` with the linear head's weights; exact only for a
  layer that feeds global average pooling + a linear layer (checked on every call).
- ``GradCAM`` (Selvaraju et al. 2017): channel weights = spatial mean of dy^c/dA; ReLU optional.
- ``GradCAMPlusPlus`` (Chattopadhay et al. 2018, eq. 19 with the exponential-score closed form); ill-conditioned
  where a channel's denominator passes through zero (it warns there).
- ``ScoreCAM`` (Wang et al. 2020): weights = softmax over channels of the score of the image masked by
  each upsampled, min-max-scaled channel; masked inputs run ``batch_size`` at a time (through a BatchNorm-folded
  copy, except on detectors, whose thresholded boxes only the model itself reproduces).
- ``LayerCAM`` (Jiang et al. 2021): ``ReLU(sum_k ReLU(dy^c/dA_k) * A_k)`` per position; several layers are
  fused as in its paper (tanh(2 M / max M) per layer, then the element-wise maximum).
- ``Saliency`` (Simonyan et al. 2013): ``max_c |dy/dx|``; ``Deconvnet`` (Zeiler & Fergus 2013) and
  ``GuidedBackprop`` (Springenberg et al. 2015): the input-space signal under their rectifier rule, at
  *every* rectifier (``cnnvis.rectifiers``), ReLU6, functional and in-place relu and clamps from 0 included;
  ``GuidedGradCAM``.

CAM-family maps come back as (N, H, W) at the input size (bilinear, ``upsample=False`` keeps the layer's
size), unnormalized; ``normalize_maps`` scales each to [0, 1]. Input-space methods return (N, 3, H, W).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.models.detection import FCOS, RetinaNet
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.ssd import SSD

from cnnvis.models import fold_batchnorm, get_layer
from cnnvis.rectifiers import rectifier_rule

DETECTION_MODELS = (GeneralizedRCNN, RetinaNet, FCOS, SSD)  # torchvision's detector families


def normalize_maps(maps: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Each map min-max scaled to [0, 1] over its last two dimensions: (M - min) / (max - min + eps * max|M|).

    The guard ``eps`` is relative to the map's magnitude, so a map reaches 1 at any scale (a range of 1e-12 as well
    as 1; pytorch-grad-cam's absolute 1e-7 leaves a map of range 1e-9 at 0.01), while a map whose range is below
    float resolution of its values (rounding noise on a constant) stays near 0, and an all-zero map stays 0."""
    flat = maps.flatten(-2)
    lo, hi = flat.amin(-1)[..., None, None], flat.amax(-1)[..., None, None]
    magnitude = torch.maximum(lo.abs(), hi.abs())
    # the smallest positive float keeps an all-zero map at 0 / tiny = 0 instead of 0 / 0
    return (maps - lo) / (hi - lo + eps * magnitude).clamp(min=torch.finfo(maps.dtype).tiny)


def upsample(maps: torch.Tensor, size) -> torch.Tensor:
    """(N, h, w) maps to (N, *size), bilinear with half-pixel centres (OpenCV's and TorchCAM's resize)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]


class Attribution:
    """Base class: hooks on ``layers`` (readable names of ``model.layers`` or module paths), batching, targets.

    ``reshape`` maps a hooked layer's output (and its gradient) to (N, C, H, W); None: the model's
    ``cam_reshape`` if it has one (transformers, detectors), else the output as it is.
    Subclasses implement ``_attribute(x, target) -> Tensor`` for one batch of at most ``batch_size`` images.
    """

    #: whether the map is a (N, h, w) layer map to upsample (CAM family) or an input-space signal
    layer_map = True

    def __init__(self, model: nn.Module, layers=(), batch_size: int = 16, reshape=None):
        self.model = model
        self.layers = [layers] if isinstance(layers, str) else list(layers)
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.reshape = reshape if reshape is not None else getattr(model, "cam_reshape", None)
        self.activations: dict[str, torch.Tensor] = {}
        self._graph_from_first_hook = False
        modules = [get_layer(model, name) for name in self.layers]  # unknown names fail listing valid ones
        self._handles = [m.register_forward_hook(self._record(name)) for name, m in zip(self.layers, modules)]

    def _record(self, name):
        def hook(module, inputs, output):
            if self._graph_from_first_hook and not torch.is_grad_enabled() and isinstance(output, torch.Tensor):
                # the trunk below ran without a graph (a third of a CPU forward pass); record from here on
                torch.set_grad_enabled(True)
                leaf = output.detach().requires_grad_(True)
                self.activations[name] = leaf
                return leaf.clone()  # what the next layers see: an in-place op there cannot touch the leaf
            self.activations[name] = output

        return hook

    # -- lifecycle: hooks never outlive the object or the with-block
    def close(self) -> None:
        for handle in getattr(self, "_handles", []):
            handle.remove()
        self._handles = []
        self.activations = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        self.close()

    # -- the one verb
    def attribute(self, x: torch.Tensor, target=None, upsample_to_input: bool = True) -> torch.Tensor:
        """Attributions of ``target`` for a batch ``x`` of (N, 3, H, W) images in [0, 1]. ``target``: None (each
        image's top-1 class), an int (that class's pre-softmax score, for all), a sequence of ints (one per image),
        a callable on one image's output (``cnnvis.targets``; the same for all) or a sequence of them."""
        if not self._handles and self.layers:
            raise RuntimeError(f"{type(self).__name__} was closed (its hooks are released); make a new one")
        if self.model.training:
            raise ValueError("the model is in training mode (dropout / batch statistics would change the maps): "
                             "call model.eval() first")
        if x.ndim != 4:
            raise ValueError(f"expected a batch of images (N, 3, H, W), got shape {tuple(x.shape)}")
        targets = self._targets(target, len(x), x.device)
        step = self.images_per_batch
        try:
            parts = [self._attribute(x[i:i + step], None if targets is None else targets[i:i + step])
                     for i in range(0, len(x), step)]
        finally:
            self.activations.clear()  # no graph or tensor kept alive between calls
        out = torch.cat(parts)
        if self.layer_map and upsample_to_input:
            out = upsample(out, x.shape[-2:])
        return out.detach()

    @property
    def images_per_batch(self) -> int:
        return self.batch_size

    @staticmethod
    def _targets(target, n: int, device):
        """None, a LongTensor of classes (N,) (the fast path), or a list of N callables."""
        if target is None:
            return None
        if callable(target):
            return [target] * n
        if isinstance(target, (list, tuple)) and any(callable(t) for t in target):
            if not all(callable(t) for t in target) or len(target) != n:
                raise ValueError(f"got {len(target)} targets for {n} images: give one callable per image or one "
                                 "for all, without mixing class indices in (use cnnvis.targets.ClassScore)")
            return list(target)
        t = torch.as_tensor(target, dtype=torch.long, device=device).flatten()
        if t.numel() == 1:
            return t.expand(n)
        if t.numel() != n:
            raise ValueError(f"got {t.numel()} targets for {n} images: give one per image, one for all, or None")
        return t

    def _forward(self, x, target):
        """Outputs and the target scores (N,), with the hooked activations recorded."""
        self.activations.clear()
        outputs = self.model(x)
        if target is None:
            if not isinstance(outputs, torch.Tensor) or outputs.ndim != 2:
                raise ValueError(f"{type(self.model).__name__} is not a classifier (task "
                                 f"{getattr(self.model, 'task', '?')!r}): give a target, e.g. "
                                 "cnnvis.targets.SegmentationRegion or DetectionBox")
            target = outputs.argmax(1)
        return outputs, target_scores(outputs, target), target

    def _as_maps(self, t):
        """A hooked layer's output, or its gradient, as (N, C, H, W) maps (after ``reshape``, when set)."""
        return t if self.reshape is None else self.reshape(t)

    def _activation(self, name):
        """The hooked layer's recorded output as (N, C, H, W) maps."""
        return self._as_maps(self.activations[name])

    def _scores_and_grads(self, x, target):
        """Target scores and dy/dA for every hooked layer: the forward pass records a graph only from the first
        hooked layer on (its hook switches grad on), so only that part is built and backpropagated."""
        self._graph_from_first_hook = True
        try:
            with torch.no_grad():
                _, scores, target = self._forward(x, target)
                acts = [self.activations[name] for name in self.layers]
                for name, act in zip(self.layers, acts):
                    if not isinstance(act, torch.Tensor):
                        others = ", ".join(n for n in getattr(self.model, "layers", {}) if n != name) or "a conv in it"
                        raise ValueError(f"layer {name!r} returns a {type(act).__name__}, not one tensor: gradient "
                                         f"methods need a tensor layer ({others}); ScoreCAM takes this one through "
                                         "the reshape")
                total = scores.sum()  # images are independent in eval mode
                if total.requires_grad:
                    grads = torch.autograd.grad(total, acts, allow_unused=True, materialize_grads=True)
                else:  # the target is constant here (e.g. no detection matches its box): nothing to explain
                    grads = [torch.zeros_like(a) for a in acts]
        finally:
            self._graph_from_first_hook = False
        # ViT / Swin reshapes only select and permute positions, so the gradient of the map is the reshaped gradient
        acts = [self._as_maps(a.detach()) for a in acts]
        return acts, [self._as_maps(g.detach()) for g in grads], scores.detach(), target

    def _attribute(self, x, target):
        raise NotImplementedError


def target_scores(outputs, target) -> torch.Tensor:
    """The (N,) scores of a batch's ``outputs`` for ``target``: a LongTensor of classes or a list of callables,
    each applied to one image's output."""
    if isinstance(target, torch.Tensor):
        return outputs.gather(1, target[:, None])[:, 0]
    scores = []
    for fn, output in zip(target, outputs):
        score = fn(output)
        if not isinstance(score, torch.Tensor) or score.numel() != 1:
            raise ValueError(f"target {fn!r} returned {score!r}: a target must return one scalar tensor per image")
        scores.append(score.reshape(()))
    return torch.stack(scores)


class _ChannelWeightedCAM(Attribution):
    """sum_k alpha_k A_k at one layer, alpha from the subclass; ReLU on request."""

    relu = True

    def __init__(self, model, layer: str, batch_size: int = 16, relu: bool | None = None, reshape=None):
        if not isinstance(layer, str):
            raise TypeError(f"{type(self).__name__} takes one layer name; LayerCAM fuses several")
        super().__init__(model, [layer], batch_size, reshape)
        if relu is not None:
            self.relu = relu

    def _attribute(self, x, target):
        weights, acts = self._weights(x, target)
        cam = (weights[:, :, None, None] * acts).sum(1)
        return cam.clamp(min=0) if self.relu else cam


class CAM(_ChannelWeightedCAM):
    """Zhou et al. 2016: M_c = sum_k w^c_k A_k, w the linear head's weights (no ReLU, as in the paper)."""

    relu = False

    def _weights(self, x, target):
        head = getattr(self.model, "head", None)
        task = getattr(self.model, "task", "classification")
        if task != "classification" or not (target is None or isinstance(target, torch.Tensor)):
            raise ValueError(f"CAM explains a class of a classifier's linear head (model task {task!r}, target "
                             f"{target!r}): give class indices, or use GradCAM / ScoreCAM for other targets")
        with torch.no_grad():
            logits, scores, target = self._forward(x, target)
        acts = self._activation(self.layers[0])
        if not isinstance(head, nn.Linear) or acts.ndim != 4 or head.in_features != acts.shape[1]:
            raise ValueError(f"CAM needs layer {self.layers[0]!r} to feed global average pooling and a linear "
                             f"head over its {acts.shape[1] if acts.ndim > 1 else '?'} channels; use GradCAM "
                             "for other layers, or make a GAP network with cnnvis.gap.gap_network")
        weights = head.weight[target]
        # exactness check: the CAM's mean plus the bias must give back the logit
        rebuilt = (weights[:, :, None, None] * acts).sum(1).mean((1, 2)) + (0 if head.bias is None else head.bias[target])
        if not torch.allclose(rebuilt, scores, rtol=1e-3, atol=1e-3 * float(scores.abs().max() + 1)):
            raise ValueError(f"layer {self.layers[0]!r} is not followed by global average pooling + the linear "
                             f"head alone (mean(CAM) + bias = {rebuilt.tolist()[:3]} != logits {scores.tolist()[:3]}): "
                             "CAM would not be exact here; use GradCAM")
        return weights, acts


class GradCAM(_ChannelWeightedCAM):
    """Selvaraju et al. 2017: alpha_k = mean_ij dy^c/dA_k(i, j); ReLU(sum_k alpha_k A_k)."""

    def _weights(self, x, target):
        (acts,), (grads,), _, _ = self._scores_and_grads(x, target)
        return grads.mean((2, 3)), acts


class GradCAMPlusPlus(_ChannelWeightedCAM):
    """Chattopadhay et al. 2018, eq. 19: alpha = g^2 / (2 g^2 + sum_ab A_ab g^3); w = sum_ij alpha ReLU(g).

    Where a channel's activation sum S is negative, the denominator g^2 (2 + S g) passes through zero at
    g = -2 / S > 0: there alpha = 1 / (2 + S g) has the condition number |S g| / |2 + S g| in g, and rounding of the
    gradient moves the map by any amount (pytorch-grad-cam's maps are as sensitive; scaling the target changes g and
    so where this happens). The map is well-conditioned only where no channel comes that close; ``attribute`` warns,
    naming the layer and the share of channels, where a position with g > 0 has a condition number above
    ``max_condition``.
    """

    eps = 1e-6  # pytorch-grad-cam's guard of the denominator
    max_condition = 1e4  # beyond it, the ~1e-6 relative rounding of float32 gradients moves alpha by over 1 %

    def _weights(self, x, target):
        (acts,), (grads,), _, _ = self._scores_and_grads(x, target)
        g2 = grads.pow(2)
        sg = acts.sum((2, 3), keepdim=True) * grads
        self._warn_if_ill_conditioned(sg, grads)
        alpha = g2 / (2 * g2 + sg * g2 + self.eps)
        alpha = torch.where(grads != 0, alpha, torch.zeros_like(alpha))
        return (alpha * grads.clamp(min=0)).sum((2, 3)), acts

    def _warn_if_ill_conditioned(self, sg, grads):
        """Warn where alpha = 1 / (2 + S g) is ill-conditioned at a position whose gradient counts (g > 0)."""
        condition = sg.abs() / (2 + sg).abs()
        ill = ((condition > self.max_condition) & (grads > 0)).flatten(2).any(2)  # (N, C) channels
        if ill.any():
            warnings.warn(
                f"Grad-CAM++ at layer {self.layers[0]!r}: {int(ill.sum())} of {ill.numel()} channels "
                f"({float(ill.float().mean()):.1%}) have a denominator 2 g^2 + S g^3 within 1/{self.max_condition:g} "
                "of zero (activation sum S < 0, g near -2 / S): there the map is ill-conditioned (a rounding-level "
                "change of the gradients can move it visibly); GradCAM is the well-conditioned alternative")


class ScoreCAM(_ChannelWeightedCAM):
    """Wang et al. 2020: alpha = softmax_k(y^c(x * H_k)), H_k = A_k upsampled and min-max scaled.

    Defaults follow pytorch-grad-cam (bilinear upsampling with aligned corners, eps 1e-8, softmax of the
    logits), so the maps equal its maps. A channel that is constant after upsampling masks the image to zero;
    those share one forward pass of the black image instead of one each (the map is unchanged).
    ``batch_size`` counts masked images per forward pass (small batches are fastest on a CPU: cache-resident).
    ``fast``: the masked images run through an inference copy of the model with BatchNorm folded into the
    convs, in channels_last layout (NHWC, which oneDNN's CPU convolutions run fastest). Where the model's output
    is continuous in its features (classifiers, segmenters) the maps agree with the plain model's to float
    rounding. A detector's is not: score thresholds, top-k and NMS over near-tied proposals pick its boxes, so a
    rounding-level change (the fold, the layout, even the batch size) can move a masked image's score by a whole
    box (IoU + score; a random Faster R-CNN at 224 px: 15 of 40 masks at ``backbone.body.4`` under the fold alone).
    On a detector the masked images therefore run through the model itself whatever ``fast`` says (a warning
    says so), and its maps are the plain model's at this ``batch_size`` (on that detector, pytorch-grad-cam's at
    its batch of 16 equal ours at ``batch_size=16`` to 3e-7, and differ from ours at 4 by 0.59 on [0, 1] maps).
    """

    def __init__(self, model, layer: str, batch_size: int = 4, relu: bool = True, progress: bool = False,
                 fast: bool = True, reshape=None):
        super().__init__(model, layer, batch_size, relu, reshape)
        self.progress = progress
        self.fast = fast and not is_detector(model)
        if fast and not self.fast:
            warnings.warn(f"ScoreCAM on {type(model).__name__} (a detector): fast=True is ignored, the masked images "
                          "run through the model itself; a folded, channels-last copy changes the float rounding, "
                          "and the detector's score thresholds, top-k and NMS turn that into different boxes",
                          stacklevel=2)

    @property
    def images_per_batch(self) -> int:
        return 1  # one image at a time; its masked copies are batched

    @torch.inference_mode()
    def _weights(self, x, target):
        _, _, target = self._forward(x, target)
        acts = self._activation(self.layers[0]).clone()
        up = F.interpolate(acts, size=x.shape[-2:], mode="bilinear", align_corners=True)[0]
        lo, hi = up.flatten(1).amin(1), up.flatten(1).amax(1)
        live = torch.nonzero(hi > lo).flatten()
        net, layout = self.model, torch.contiguous_format
        if self.fast:  # a fresh copy per image: the model's weights may have changed since the last call
            net, layout = fold_batchnorm(self.model).to(memory_format=torch.channels_last), torch.channels_last
        scores = torch.empty(acts.shape[1], device=x.device)

        def score(images):  # the target's score of each masked image
            outputs = net(images.contiguous(memory_format=layout))
            if isinstance(target, torch.Tensor):
                return outputs[:, target[0]]
            return target_scores(outputs, target[:1] * len(images))

        if len(live) < acts.shape[1]:  # (up - lo) is exactly 0: the masked image is black
            scores[hi <= lo] = score(torch.zeros_like(x))[0]
        chunks = range(0, len(live), self.batch_size)
        if self.progress:
            from tqdm import tqdm

            chunks = tqdm(chunks, desc="Score-CAM masks", leave=False)
        for i in chunks:
            ch = live[i:i + self.batch_size]
            masks = (up[ch] - lo[ch, None, None]) / (hi[ch] - lo[ch] + 1e-8)[:, None, None]
            scores[ch] = score(x * masks[:, None])
        return torch.softmax(scores, 0)[None], acts


def is_detector(model: nn.Module) -> bool:
    """Whether ``model`` is an object detector (``task`` "detection", or a torchvision detection model inside):
    its output is the boxes that thresholds, top-k and NMS keep, so it jumps where a score crosses a threshold."""
    return getattr(model, "task", None) == "detection" or any(isinstance(m, DETECTION_MODELS) for m in model.modules())


class LayerCAM(Attribution):
    """Jiang et al. 2021: M = ReLU(sum_k ReLU(dy^c/dA_k) * A_k) at each layer; with several layers, each map
    is scaled by tanh(gamma M / max M) and the maps (upsampled to the input) are fused by their maximum."""

    def __init__(self, model, layers, batch_size: int = 16, gamma: float = 2.0, reshape=None):
        super().__init__(model, layers, batch_size, reshape)
        if not self.layers:
            raise ValueError("LayerCAM needs at least one layer name")
        self.gamma = gamma
        self._size = None

    def attribute(self, x, target=None, upsample_to_input: bool = True):
        if len(self.layers) > 1 and not upsample_to_input:
            raise ValueError("several layers' LayerCAMs are fused at the input size: keep upsample_to_input=True")
        return super().attribute(x, target, upsample_to_input)

    def layer_maps(self, x, target=None) -> dict[str, torch.Tensor]:
        """Each layer's own LayerCAM at its own resolution (no scaling, no fusion)."""
        acts, grads, _, _ = self._scores_and_grads(x, self._targets(target, len(x), x.device))
        return {name: (g.clamp(min=0) * a).sum(1).clamp(min=0) for name, a, g in zip(self.layers, acts, grads)}

    def _attribute(self, x, target):
        maps = list(self.layer_maps(x, target).values())
        if len(maps) == 1:
            return maps[0]
        scaled = [torch.tanh(self.gamma * m / m.flatten(1).amax(1).clamp(min=1e-12)[:, None, None]) for m in maps]
        return torch.stack([upsample(m, x.shape[-2:]) for m in scaled]).amax(0)


class InputGradient(Attribution):
    """dy^c/dx with a rectifier rule (``gradient``, ``deconvnet`` or ``guided``) at every rectifier."""

    layer_map = False
    rule = "gradient"

    def __init__(self, model, batch_size: int = 16):
        super().__init__(model, [], batch_size)

    def _attribute(self, x, target):
        with torch.enable_grad(), rectifier_rule(self.rule):
            x = x.detach().requires_grad_(True)
            _, scores, _ = self._forward(x, target)
            (grad,) = torch.autograd.grad(scores.sum(), x)
        return grad


class Saliency(InputGradient):
    """Simonyan et al. 2013: the image-specific class saliency map max_c |dy^c/dx_c| (N, H, W)."""

    def _attribute(self, x, target):
        return super()._attribute(x, target).abs().amax(1)


class Deconvnet(InputGradient):
    """Zeiler & Fergus 2013: backward signal rectified at every rectifier, regardless of the forward pass."""

    rule = "deconvnet"


class GuidedBackprop(InputGradient):
    """Springenberg et al. 2015: only positive signal through units that were active."""

    rule = "guided"


class GuidedGradCAM(Attribution):
    """Selvaraju et al. 2017: guided backpropagation times the upsampled Grad-CAM (scaled to [0, 1])."""

    layer_map = False

    def __init__(self, model, layer: str, batch_size: int = 16, reshape=None):
        super().__init__(model, [], batch_size)
        self.gradcam = GradCAM(model, layer, batch_size, reshape=reshape)
        self.guided = GuidedBackprop(model, batch_size)

    def _attribute(self, x, target):
        if target is None:
            with torch.no_grad():
                target = self.model(x).argmax(1)
        cam = normalize_maps(self.gradcam.attribute(x, target))
        return self.guided.attribute(x, target) * cam[:, None]

    def close(self):
        super().close()
        for part in ("gradcam", "guided"):
            if hasattr(self, part):
                getattr(self, part).close()


METHODS = {
    "cam": CAM, "gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "scorecam": ScoreCAM, "layercam": LayerCAM,
    "saliency": Saliency, "deconvnet": Deconvnet, "guided_backprop": GuidedBackprop, "guided_gradcam": GuidedGradCAM,
}


def make_method(name: str, model: nn.Module, layer=None, **kwargs) -> Attribution:
    """A method by its short name (``METHODS``); ``layer`` is ignored by the input-space ones."""
    if name not in METHODS:
        raise KeyError(f"unknown attribution method {name!r}; available: {', '.join(METHODS)}")
    cls = METHODS[name]
    if issubclass(cls, InputGradient):
        return cls(model, **kwargs)
    if layer is None:
        raise ValueError(f"{name} needs a layer name (e.g. one of {', '.join(getattr(model, 'layers', {}))})")
    return cls(model, layer, **kwargs)


# every method by name as the experiments run it: METHODS, and LayerCAM fused over several layers
ALL_METHODS = ["cam", "gradcam", "gradcam++", "scorecam", "layercam", "layercam_fused", "saliency", "deconvnet",
               "guided_backprop", "guided_gradcam"]


def build_method(name: str, model: nn.Module, layer: str, layercam_layers: list[str], batch_size: int,
                 scorecam_batch_size: int) -> Attribution:
    """A method of ``ALL_METHODS`` at ``layer`` (``layercam_fused``: at ``layercam_layers``); Score-CAM batches its
    masked passes by ``scorecam_batch_size``, the others their images by ``batch_size``."""
    if name == "layercam_fused":
        return LayerCAM(model, list(layercam_layers), batch_size)
    if name == "scorecam":
        return make_method(name, model, layer, batch_size=scorecam_batch_size)
    return make_method(name, model, layer, batch_size=batch_size)


def as_map(attribution: torch.Tensor) -> torch.Tensor:
    """An (N, H, W) saliency map from any method's output: input-space signals by max_c |.| (Simonyan)."""
    return attribution.abs().amax(1) if attribution.ndim == 4 else attribution


def maps_for_classes(model: nn.Module, image: torch.Tensor, classes, methods, layer: str, batch_size: int = 16) -> dict:
    """One (3, H, W) image explained for each of ``classes`` (Grad-CAM Fig. 1's class-discriminative pair, CAM Fig. 4's
    top-5): {method name (``METHODS``): its attributions, one per class, stacked}."""
    x = image[None].expand(len(classes), *image.shape).contiguous()
    target = torch.as_tensor(list(classes), device=x.device)
    found = {}
    for name in methods:
        with make_method(name, model, layer, batch_size=batch_size) as method:
            found[name] = method.attribute(x, target).detach()
    return found
