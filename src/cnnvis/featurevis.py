"""Feature visualization as Olah et al. 2017 (Distill) and its libraries Lucid / Lucent do it.

Three separate small pieces, as in Lucid:

- parametrizations (``ImageParam``): the image as a function of learnable tensors, in pixels or in a Fourier
  basis scaled by 1/f, optionally in decorrelated colour (the square root of the ImageNet colour covariance),
  mapped to [0, 1] by a sigmoid or a clip;
- transforms (``pad``, ``jitter``, ``random_scale``, ``random_rotate``; ``STANDARD_TRANSFORMS`` is Lucid's set),
  applied to the batch before every step (transformation robustness);
- objectives (``cnnvis.objectives``: ``channel``, ``unit``, ``class_logit``, ``direction``, ``diversity``): each
  gives one value per batch element, and they add and scale (``channel("stage4", [3, 3]) + 10 * diversity("stage4")``).

``render`` optimizes the batch with Adam, one image per batch element, so many units run as one batch.

    images = render(model, objectives.channel("stage4", [0, 5]), ImageParam(2, 128)).images
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from cnnvis.models import get_layer
from cnnvis.objectives import Objective, objective_values

# ---------------------------------------------------------------- colour

# Covariance of the RGB values (in [0, 1]) of all pixels of the 1,300 images of imagenet-val-1300 at 64 px
# (``color_covariance``; tests/test_featurevis.py recomputes it when the data is there).
IMAGENET_COLOR_COVARIANCE = torch.tensor([
    [0.06652, 0.05782, 0.05247],
    [0.05782, 0.06419, 0.06078],
    [0.05247, 0.06078, 0.07253],
])


def color_covariance(images: torch.Tensor) -> torch.Tensor:
    """The 3x3 covariance of the colours of every pixel of ``images`` (N, 3, H, W)."""
    pixels = images.permute(1, 0, 2, 3).reshape(3, -1).double()
    return torch.cov(pixels).float()


def color_sqrt(covariance: torch.Tensor) -> torch.Tensor:
    """Lucid's square root of a colour covariance, U sqrt(S) of its SVD: maps white noise to that covariance."""
    u, s, _ = torch.linalg.svd(covariance.double())
    return (u * s.sqrt()).float()


def color_decorrelation(covariance: torch.Tensor = IMAGENET_COLOR_COVARIANCE) -> torch.Tensor:
    """``color_sqrt`` scaled so its largest column has norm 1 (Lucid's normalization: unit steps stay unit)."""
    root = color_sqrt(covariance)
    return root / root.norm(dim=0).max()


# ---------------------------------------------------------------- parametrizations


def fourier_scale(height: int, width: int, decay_power: float = 1.0) -> torch.Tensor:
    """1 / f^decay_power for the (height, width // 2 + 1) frequencies of ``rfft2`` (f floored at 1/size)."""
    fy = torch.fft.fftfreq(height).view(-1, 1)
    fx = torch.fft.rfftfreq(width).view(1, -1)
    freqs = (fx ** 2 + fy ** 2).sqrt()
    return 1.0 / freqs.clamp_min(1.0 / max(height, width)) ** decay_power


# Lucid's constant dividing the Fourier image: larger values give less saturated starts.
FOURIER_DIVISOR = 4.0


class ImageParam(nn.Module):
    """A batch of images in [0, 1] as a function of learnable tensors.

    ``fourier``: the tensors are the real and imaginary parts of each image's spectrum, multiplied by 1/f
    before the inverse FFT, so a gradient step moves low frequencies as much as high ones (pixel steps are
    dominated by high frequencies). ``decorrelate``: the three channels are mixed by ``color_decorrelation``,
    so the optimizer steps in decorrelated colour. ``valid``: "sigmoid" (Lucid) or "clip" (x + 0.5 clamped).
    """

    def __init__(self, batch: int, size: int, fourier: bool = True, decorrelate: bool = True,
                 valid: str = "sigmoid", std: float = 0.01, seed: int = 0, decay_power: float = 1.0):
        super().__init__()
        if valid not in ("sigmoid", "clip"):
            raise ValueError(f"valid={valid!r}: use 'sigmoid' or 'clip' to map the image to [0, 1]")
        if batch < 1 or size < 2:
            raise ValueError(f"ImageParam needs batch >= 1 and size >= 2 (got batch={batch}, size={size})")
        self.size, self.fourier, self.decorrelate, self.valid = size, fourier, decorrelate, valid
        shape = (batch, 3, size, size // 2 + 1, 2) if fourier else (batch, 3, size, size)
        noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
        self.raw = nn.Parameter(std * noise)
        self.register_buffer("scale", fourier_scale(size, size, decay_power)[..., None], persistent=False)
        self.register_buffer("colors", color_decorrelation(), persistent=False)

    def forward(self) -> torch.Tensor:
        x = self.raw
        if self.fourier:
            x = torch.fft.irfft2(torch.view_as_complex(self.scale * x), s=(self.size, self.size), norm="ortho")
            x = x / FOURIER_DIVISOR
        if self.decorrelate:
            x = torch.einsum("ij,bjhw->bihw", self.colors, x)
        return torch.sigmoid(x) if self.valid == "sigmoid" else (x + 0.5).clamp(0, 1)

    @torch.no_grad()
    def set_image(self, image: torch.Tensor) -> "ImageParam":
        """Set the tensors so that ``self()`` returns ``image`` (B, 3, size, size) with values inside (0, 1)."""
        x = torch.logit(image) if self.valid == "sigmoid" else image - 0.5
        if self.decorrelate:
            x = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(self.colors), x)
        if self.fourier:
            x = torch.view_as_real(torch.fft.rfft2(x * FOURIER_DIVISOR, norm="ortho")) / self.scale
        self.raw.copy_(x)
        return self


# ---------------------------------------------------------------- transforms

Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _pick(values: Sequence, generator: torch.Generator):
    return values[int(torch.randint(len(values), (1,), generator=generator))]


def pad(pixels: int, value: float = 0.5) -> Transform:
    """Pad every side by ``pixels`` with a constant (Lucid: grey), so jitter and rotation do not reach the image."""
    return lambda x, generator: F.pad(x, [pixels] * 4, value=value)


def jitter(pixels: int) -> Transform:
    """A random crop ``pixels - 1`` smaller on each axis: a shift of 0 .. pixels - 1 (Lucid's jitter)."""
    def crop(x, generator):
        dy, dx = (int(v) for v in torch.randint(pixels, (2,), generator=generator))
        return x[..., dy:x.shape[-2] - pixels + 1 + dy, dx:x.shape[-1] - pixels + 1 + dx]
    return crop


def random_scale(scales: Sequence[float]) -> Transform:
    """Resize (bilinear) by a factor drawn from ``scales``."""
    def rescale(x, generator):
        s = _pick(scales, generator)
        size = [max(1, math.ceil(s * d)) for d in x.shape[-2:]]
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return rescale


def random_rotate(degrees: Sequence[float]) -> Transform:
    """Rotate about the centre by an angle drawn from ``degrees`` (bilinear, zero outside)."""
    def rotate(x, generator):
        a = math.radians(_pick(degrees, generator))
        theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]],
                             dtype=x.dtype, device=x.device).expand(x.shape[0], 2, 3)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return rotate


# Lucid's standard_transforms (lucid/optvis/transform.py), the same in Lucent.
STANDARD_TRANSFORMS: tuple[Transform, ...] = (
    pad(12, 0.5),
    jitter(8),
    random_scale([1 + (i - 5) / 50 for i in range(11)]),
    random_rotate(list(range(-10, 11)) + 5 * [0]),
    jitter(4),
)


def apply_transforms(x: torch.Tensor, transforms: Sequence[Transform], generator: torch.Generator) -> torch.Tensor:
    for transform in transforms:
        x = transform(x, generator)
    return x


# ---------------------------------------------------------------- the optimization


@dataclass
class Rendered:
    images: torch.Tensor  # (B, 3, H, W) in [0, 1]
    values: torch.Tensor  # (B,) objective on the final images, untransformed
    history: torch.Tensor  # (steps, B) objective during the optimization (transformed images)


def render(model: nn.Module, objective: Objective, param: ImageParam, transforms: Sequence[Transform] = STANDARD_TRANSFORMS,
           steps: int = 256, lr: float = 0.05, seed: int = 0, progress: bool = False) -> Rendered:
    """Maximize ``objective`` over ``param``'s images with Adam (Lucid's optimizer and learning rate).

    Before every step the batch goes through ``transforms`` (one random draw per step for the whole batch,
    as in Lucid). ``model`` takes [0, 1] images (every model here normalizes its own input).
    """
    if model.training:
        raise ValueError("call model.eval() first: batch statistics would couple the images of the batch")
    for name in objective.layers:
        if name is not None:
            get_layer(model, name)  # an unknown name fails listing the valid ones
    device = next(model.parameters()).device
    param = param.to(device)
    optimizer = torch.optim.Adam(param.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    history = []
    for _ in tqdm(range(steps), desc=f"render {objective.name}", disable=not progress, leave=False):
        optimizer.zero_grad(set_to_none=True)
        values = objective_values(model, apply_transforms(param(), transforms, generator), objective)
        (-values.sum()).backward()
        optimizer.step()
        history.append(values.detach())
    with torch.no_grad():
        images = param()
        final = objective_values(model, images, objective)
    hist = torch.stack(history).cpu() if history else torch.empty(0, len(images))
    return Rendered(images.detach(), final.detach().cpu(), hist)


@dataclass(frozen=True)
class VisSettings:
    """A parametrization and whether Lucid's standard transforms run (the presets below)."""

    fourier: bool
    decorrelate: bool
    valid: str = "sigmoid"
    robust: bool = True  # STANDARD_TRANSFORMS before every step

    def param(self, batch: int, size: int, seed: int = 0) -> ImageParam:
        return ImageParam(batch, size, fourier=self.fourier, decorrelate=self.decorrelate, valid=self.valid, seed=seed)

    @property
    def transforms(self) -> tuple:
        return STANDARD_TRANSFORMS if self.robust else ()


# Olah et al. 2017: "lucid" is their recipe; "lucid_pixel" the pixel-space baseline of their figures
# (the same optimizer and sigmoid, no Fourier basis, no colour decorrelation, no transforms).
PRESETS = {
    "lucid": VisSettings(fourier=True, decorrelate=True, valid="sigmoid", robust=True),
    "lucid_pixel": VisSettings(fourier=False, decorrelate=False, valid="sigmoid", robust=False),
}


# ---------------------------------------------------------------- measuring the result


def spectrum_slope(images: torch.Tensor) -> torch.Tensor:
    """Per image, the slope of log power against log frequency of its radially averaged power spectrum.

    On the grey image minus its mean, over the integer radii 1 .. size / 2 (cycles per image); natural images
    sit near -2, white noise at 0.
    """
    grey = images.detach().cpu().mean(1).double()  # on the CPU: the radius index below is built there
    grey = grey - grey.mean((-2, -1), keepdim=True)
    power = torch.fft.fftshift(torch.fft.fft2(grey).abs() ** 2, dim=(-2, -1))
    h, w = grey.shape[-2:]
    yy, xx = torch.meshgrid(torch.arange(h) - h // 2, torch.arange(w) - w // 2, indexing="ij")
    radius = (yy ** 2 + xx ** 2).double().sqrt().round().long()
    radii = torch.arange(1, min(h, w) // 2 + 1)
    slopes = []
    for p in power:
        radial = torch.stack([p[radius == r].mean() for r in radii])
        slopes.append(float(np.polyfit(np.log(radii.numpy()), np.log(radial.clamp_min(1e-30).numpy()), 1)[0]))
    return torch.tensor(slopes)
