"""Incremental occlusion inference: recompute only what an occluder changes (Nakandala et al., SIGMOD 2019).

An occluder changes a small patch of the input; in each conv or pooling layer the changed region grows
by the kernel and shrinks by the stride, and pointwise layers keep it. The engine caches every layer's
output for the unoccluded image and, for a batch of occluder positions, carries one fixed-size *patch*
per position (``Patched``: the true map of position b is the cached map with ``patch[b]`` pasted at
``(top[b], left[b])``). A windowed layer reads, for every position at once, the window of its input it
needs (cache + pasted patch, padded where the real layer pads) and runs the layer without padding on the
stacked windows. Once a patch covers most of its map, or at a global layer (fully connected, global
pooling) or a module without a rule here, the maps are materialized and the rest runs in full.

``approximate=tau`` is Krypton's projective-field threshold: a region stops growing once its side
exceeds ``tau`` of its map's side (what lies beyond is read from the cache), trading exactness for speed.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
import torchvision
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.modules.utils import _pair

from cnnvis.models import ImageClassifier, MBConv, Normalize, SamePad

# Layers that act on each pixel on its own (LRN mixes channels, not pixels).
POINTWISE = (nn.ReLU, nn.ReLU6, nn.BatchNorm2d, nn.LocalResponseNorm, nn.Dropout, nn.Identity, Normalize)
# Layers whose output mixes the whole map: the patches are materialized before them.
GLOBAL = (nn.Linear, nn.Flatten, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


@dataclass
class Patched:
    """Per-position maps stored as the clean (unoccluded) map plus one pasted patch per position."""

    clean: Tensor  # 1 x C x H x W
    patch: Tensor  # B x C x h x w
    top: Tensor  # B, long: row of patch[b]'s first row in the map
    left: Tensor  # B, long


class IncrementalOcclusion:
    """Logits (and one layer's output) of ``model`` for a batch of occluded copies of ``image``.

    ``engine(tops, lefts, size, fill)`` returns ``(logits, activation)`` for the occluders
    ``[top, top+size) x [left, left+size)`` (clipped to the image) filled with ``fill`` (a scalar or an
    RGB triple), equal to ``model(occluded images)`` up to float rounding. ``activation`` is the output of
    ``layer`` (a readable name or module path; only ``channel`` when given), or None without a layer.
    ``threshold``: the fraction of a map a patch may cover before the layer is computed in full.
    ``macs`` counts the multiply-adds of conv and linear layers run so far.
    """

    def __init__(self, model: nn.Module, image: Tensor, layer: str | None = None, channel: int | None = None,
                 threshold: float = 0.9, approximate: float | None = None):
        if approximate is not None and not 0 < approximate <= 1:
            raise ValueError(f"approximate={approximate}: the projective-field threshold is a fraction in (0, 1]")
        self.model, self.image = model, image.unsqueeze(0) if image.ndim == 3 else image
        self.layer_path = getattr(model, "layers", {}).get(layer, layer) if layer else None
        if self.layer_path and self.layer_path not in dict(model.named_modules()):
            from cnnvis.models import get_layer

            get_layer(model, layer)  # raises, listing the valid names
        self.channel, self.threshold, self.approximate = channel, threshold, approximate
        self.macs = 0
        self._clean: dict[str, Tensor] = {}
        self._warned: set[str] = set()
        self._captured: Tensor | None = None

    @torch.no_grad()
    def __call__(self, tops, lefts, size: int, fill=0.0):
        device = self.image.device
        tops, lefts = (torch.as_tensor(t, dtype=torch.long).to(device) for t in (tops, lefts))
        self._captured = None
        logits = self._run(self.model, self._occluded(tops, lefts, size, fill), "")
        return self._materialize(logits), self._captured

    def _occluded(self, tops, lefts, size, fill) -> Patched:
        """The input as patches: the image under each (clipped) occluder, filled with ``fill``."""
        x = self.image
        H, W = x.shape[-2:]
        h, w = min(size, H), min(size, W)
        pt, pl = tops.clamp(0, H - h), lefts.clamp(0, W - w)
        patch = _gather(x, pt, pl, h, w)
        rows = pt[:, None] + torch.arange(h, device=x.device)
        cols = pl[:, None] + torch.arange(w, device=x.device)
        inside = ((rows >= tops[:, None]) & (rows < tops[:, None] + size))[:, :, None] & \
                 ((cols >= lefts[:, None]) & (cols < lefts[:, None] + size))[:, None, :]
        fill = torch.as_tensor(fill, dtype=x.dtype).to(x.device).reshape(1, -1, 1, 1)
        return Patched(x, torch.where(inside[:, None], fill, patch), pt, pl)

    # ------------------------------------------------------------------ the walker

    def _run(self, module: nn.Module, x, path: str):
        if isinstance(module, ImageClassifier):
            for name in ("normalize", "features", "pool", "classifier"):
                x = self._run(getattr(module, name), x, _join(path, name))
        elif isinstance(module, nn.Sequential):
            for name, child in module.named_children():
                x = self._run(child, x, _join(path, name))
        elif isinstance(module, MBConv):
            out = self._run(module.project, self._run(module.depthwise, self._run(
                module.expand, x, _join(path, "expand")), _join(path, "depthwise")), _join(path, "project"))
            x = self._add(x, out, path) if module.residual else out
        elif isinstance(module, torchvision.models.resnet.BasicBlock):
            identity = x if module.downsample is None else self._run(module.downsample, x, _join(path, "downsample"))
            out = self._run(module.relu, self._run(module.bn1, self._run(module.conv1, x, _join(path, "conv1")),
                                                   _join(path, "bn1")), _join(path, "relu"))
            out = self._run(module.bn2, self._run(module.conv2, out, _join(path, "conv2")), _join(path, "bn2"))
            out = self._add(out, identity, path)
            # the harness gives the block's last ReLU its own module; torchvision reuses ``relu``
            x = self._run(getattr(module, "relu_out", module.relu), out, _join(path, "relu_out"))
        else:
            x = self._leaf(module, x, path)
        if path == self.layer_path:
            self._capture(x)
        return x

    def _leaf(self, module: nn.Module, x, path: str):
        supported = _window_geometry(module) is not None or isinstance(module, (SamePad, *GLOBAL)) or (
            isinstance(module, POINTWISE) and not (module.training and isinstance(module, (nn.BatchNorm2d, nn.Dropout))))
        if not supported and path not in self._warned:
            self._warned.add(path)
            warnings.warn(f"incremental occlusion: no rule for layer {path!r} ({type(module).__name__}); "
                          f"computing it and every later layer in full", stacklevel=4)
        if isinstance(x, Patched) and supported and not isinstance(module, GLOBAL):
            if isinstance(module, POINTWISE):
                if getattr(module, "inplace", False):  # never overwrite the cache or a patch another branch reads
                    x = Patched(x.clean.clone(), x.patch.clone(), x.top, x.left)
                return Patched(self._clean_out(module, x, path), module(x.patch), x.top, x.left)
            if isinstance(module, SamePad):
                top, left = _same_pad_offsets(module, x.clean)
                return Patched(self._clean_out(module, x, path), x.patch, x.top + top, x.left + left)
            out = self._window(module, x, path)
            if out is not None:
                return out
        x = self._materialize(x)
        self._count(module, x)
        if not supported and self.layer_path and self.layer_path.startswith(path + "."):
            from cnnvis.hooks import record_activations

            with record_activations(self.model, self.layer_path) as store:
                out = module(x)
            self._capture(store[self.layer_path])
            return out
        return module(x)

    # ------------------------------------------------------------------ rules

    def _window(self, module: nn.Module, x: Patched, path: str) -> Patched | None:
        """A conv or pooling layer on the window each position needs; None when it should run in full."""
        (kh, kw), (sh, sw), (ph, pw), (dh, dw), fill = _window_geometry(module)
        clean_out = self._clean_out(module, x, path)
        Ho, Wo = clean_out.shape[-2:]
        h, w = x.patch.shape[-2:]
        top, ho = self._grow(x.top, h, kh, sh, ph, dh, Ho)
        left, wo = self._grow(x.left, w, kw, sw, pw, dw, Wo)
        if ho * wo > self.threshold * Ho * Wo:
            return None
        H, W = x.clean.shape[-2:]
        need_h, need_w = (Ho - 1) * sh + (kh - 1) * dh + 1, (Wo - 1) * sw + (kw - 1) * dw + 1
        pads = (pw, max(need_w - W - pw, 0), ph, max(need_h - H - ph, 0))
        key = path + ":padded"
        if key not in self._clean:
            self._clean[key] = F.pad(x.clean, pads, value=fill)
        windows = _read(self._clean[key], x, (ph, pw), top * sh, left * sw,
                        (ho - 1) * sh + (kh - 1) * dh + 1, (wo - 1) * sw + (kw - 1) * dw + 1)
        self.macs += _macs(module, windows.shape[0], ho * wo)
        return Patched(clean_out, _unpadded(module, windows), top, left)

    def _grow(self, start: Tensor, size: int, k: int, s: int, p: int, d: int, n_out: int):
        """First output row and fixed row count covering every output that rows [start, start+size) reach."""
        first = -((-(start + p - (k - 1) * d)) // s)  # ceil division
        count = min(n_out, (size + (k - 1) * d - 1) // s + 1)
        if self.approximate is not None:  # stop growing past tau of the map; shrinking by the stride stays
            cap = max(math.ceil(self.approximate * n_out), -(-size // s))
            if count > cap:
                first, count = first + (count - cap) // 2, cap
        return first.clamp(0, n_out - count), count

    def _add(self, a, b, path: str):
        """Residual addition: both operands read on the union of their patches."""
        if not (isinstance(a, Patched) and isinstance(b, Patched)):
            return self._materialize(a) + self._materialize(b)
        if path + ":add" not in self._clean:
            self._clean[path + ":add"] = a.clean + b.clean
        clean = self._clean[path + ":add"]
        H, W = clean.shape[-2:]
        (ha, wa), (hb, wb) = a.patch.shape[-2:], b.patch.shape[-2:]
        top, bottom = torch.minimum(a.top, b.top), torch.maximum(a.top + ha, b.top + hb)
        left, right = torch.minimum(a.left, b.left), torch.maximum(a.left + wa, b.left + wb)
        h, w = min(int((bottom - top).max()), H), min(int((right - left).max()), W)
        if h * w > self.threshold * H * W:
            return self._materialize(a) + self._materialize(b)
        top, left = top.clamp(0, H - h), left.clamp(0, W - w)
        patch = _read(a.clean, a, (0, 0), top, left, h, w) + _read(b.clean, b, (0, 0), top, left, h, w)
        return Patched(clean, patch, top, left)

    # ------------------------------------------------------------------ helpers

    def _clean_out(self, module: nn.Module, x: Patched, path: str) -> Tensor:
        if path not in self._clean:
            self._clean[path] = module(x.clean)
        return self._clean[path]

    def _materialize(self, x):
        if not isinstance(x, Patched):
            return x
        h, w = x.patch.shape[-2:]
        full = x.clean.expand(len(x.patch), -1, -1, -1).clone()
        for b, (top, left) in enumerate(zip(x.top.tolist(), x.left.tolist())):
            full[b, :, top:top + h, left:left + w] = x.patch[b]
        return full

    def _capture(self, x):
        if isinstance(x, Patched):  # materialize only the channel asked for
            c = slice(self.channel, self.channel + 1) if self.channel is not None else slice(None)
            x = self._materialize(Patched(x.clean[:, c], x.patch[:, c], x.top, x.left))
            self._captured = x[:, 0] if self.channel is not None else x
        else:  # a copy: a later in-place layer may overwrite this output
            self._captured = (x[:, self.channel] if self.channel is not None else x).clone()

    def _count(self, module: nn.Module, x: Tensor):
        if isinstance(module, nn.Linear):
            self.macs += x.numel() // module.in_features * module.in_features * module.out_features
        elif isinstance(module, nn.Conv2d):
            (kh, kw), (sh, sw), (ph, pw), (dh, dw), _ = _window_geometry(module)
            ho = (x.shape[-2] + 2 * ph - (kh - 1) * dh - 1) // sh + 1
            wo = (x.shape[-1] + 2 * pw - (kw - 1) * dw - 1) // sw + 1
            self.macs += _macs(module, x.shape[0], ho * wo)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _window_geometry(module: nn.Module):
    """(kernel, stride, padding, dilation, padding value) of a layer the window rule handles, else None."""
    if isinstance(module, nn.Conv2d) and module.padding_mode == "zeros" and not isinstance(module.padding, str):
        return module.kernel_size, module.stride, module.padding, module.dilation, 0.0
    if isinstance(module, nn.MaxPool2d) and not module.return_indices:
        return (_pair(module.kernel_size), _pair(module.stride or module.kernel_size), _pair(module.padding),
                _pair(module.dilation), -math.inf)
    if isinstance(module, nn.AvgPool2d) and module.divisor_override is None and not module.ceil_mode and (
            module.count_include_pad or _pair(module.padding) == (0, 0)):
        return _pair(module.kernel_size), _pair(module.stride or module.kernel_size), _pair(module.padding), (1, 1), 0.0
    return None


def _unpadded(module: nn.Module, x: Tensor) -> Tensor:
    """The layer on windows that already hold their padding."""
    if isinstance(module, nn.Conv2d):
        return F.conv2d(x, module.weight, module.bias, module.stride, 0, module.dilation, module.groups)
    if isinstance(module, nn.MaxPool2d):
        return F.max_pool2d(x, module.kernel_size, module.stride or module.kernel_size, 0, module.dilation)
    return F.avg_pool2d(x, module.kernel_size, module.stride or module.kernel_size, 0)


def _macs(module: nn.Module, batch: int, pixels: int) -> int:
    if not isinstance(module, nn.Conv2d):
        return 0
    kh, kw = module.kernel_size
    return batch * pixels * module.out_channels * module.in_channels // module.groups * kh * kw


def _same_pad_offsets(module: SamePad, x: Tensor) -> tuple[int, int]:
    """Rows and columns SamePad adds above and left of ``x`` (the smaller half of TF's 'SAME' padding)."""
    def before(size):
        return max((math.ceil(size / module.stride) - 1) * module.stride + module.kernel_size - size, 0) // 2

    return before(x.shape[-2]), before(x.shape[-1])


def _gather(image: Tensor, tops: Tensor, lefts: Tensor, h: int, w: int) -> Tensor:
    """Per position b, the h x w window at (tops[b], lefts[b]) of a 1 x C x H x W map."""
    return _read(image, None, (0, 0), tops, lefts, h, w)


def _read(padded: Tensor, x: Patched | None, offset: tuple[int, int], tops: Tensor, lefts: Tensor, h: int, w: int) -> Tensor:
    """Per position b, the h x w window at (tops[b], lefts[b]) of ``padded`` (the clean map with ``offset``
    rows/columns of padding before it) with x.patch[b] pasted at its place: B x C x h x w."""
    if x is not None and x.patch.shape[-2:] == (h, w) and torch.equal(tops - offset[0], x.top) \
            and torch.equal(lefts - offset[1], x.left):
        return x.patch  # the window is the patch (1x1 convs)
    # slices copy whole rows at memory speed; a B-long Python loop costs far less than one gather
    tops, lefts = tops.tolist(), lefts.tolist()
    windows = torch.stack([padded[0, :, t:t + h, l:l + w] for t, l in zip(tops, lefts)])
    if x is None:
        return windows
    ph, pw = x.patch.shape[-2:]
    for b, (t, l, pt, pl) in enumerate(zip(tops, lefts, x.top.tolist(), x.left.tolist())):
        pt, pl = pt + offset[0] - t, pl + offset[1] - l  # the patch's corner in window coordinates
        r0, r1, c0, c1 = max(pt, 0), min(pt + ph, h), max(pl, 0), min(pl + pw, w)
        if r0 < r1 and c0 < c1:
            windows[b, :, r0:r1, c0:c1] = x.patch[b, :, r0 - pt:r1 - pt, c0 - pl:c1 - pl]
    return windows


@torch.no_grad()
def forward_macs(model: nn.Module, input_size: int = 224) -> int:
    """Multiply-adds of conv and linear layers in one full forward pass of one image."""
    device = next(model.parameters()).device
    engine = IncrementalOcclusion(model, torch.zeros(1, 3, input_size, input_size, device=device), threshold=-1.0)
    engine(torch.zeros(1), torch.zeros(1), 1)
    return engine.macs
