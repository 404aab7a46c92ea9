"""The papers' figure layouts; experiments pass data in, get matplotlib figures back.

One module per figure family (filters, occlusion, deconvnet, cams, ...); all share the helpers here.
"""

import matplotlib

matplotlib.use("Agg")  # figures are written to files; no display is needed or assumed

import textwrap  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from cnnvis.stats import t_mean  # noqa: E402

CHAR_WIDTH_EM = 0.6  # a generous average character width of the default sans-serif font, in ems


def to_image(x) -> np.ndarray:
    """A (3, H, W) tensor / (H, W, 3) array in [0, 1] as an (H, W, 3) array for imshow."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().float()
        if x.ndim == 3 and x.shape[0] in (1, 3):
            x = x.permute(1, 2, 0)
        x = x.numpy()
    return np.clip(x, 0, 1)


def rescale(x, symmetric: bool = False) -> np.ndarray:
    """To [0, 1] by min-max; ``symmetric`` keeps 0 at 0.5 (for signed projections and filters)."""
    x = np.asarray(x, dtype=np.float64)
    if symmetric:
        m = np.abs(x).max()
        return 0.5 + 0.5 * x / m if m > 0 else np.full_like(x, 0.5)
    lo, hi = x.min(), x.max()
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)


def grid_shape(n: int, cols: int | None = None) -> tuple[int, int]:
    cols = cols or int(np.ceil(np.sqrt(n)))
    return int(np.ceil(n / cols)), cols


def legend_outside(ax, handles=None, labels=None, fontsize: int = 7, **kwargs):
    """A legend to the right of ``ax`` (the rightmost panel of its row), where it can cover no data."""
    if handles is None:
        handles, labels = ax.get_legend_handles_labels()
    return ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
                     frameon=False, fontsize=fontsize, **kwargs)


def wrap_lines(text: str, chars: int) -> str:
    """``text`` with each of its lines wrapped at ``chars`` characters (its own line breaks kept)."""
    return "\n".join(textwrap.fill(line, chars) for line in text.split("\n"))


def wrap_to_width(text: str, inches: float, fontsize: float) -> str:
    """``text`` with each of its lines wrapped to ``inches`` at ``fontsize``."""
    return wrap_lines(text, max(1, int(inches * 72 / (CHAR_WIDTH_EM * fontsize))))


def wrap_to_axes(ax, text: str, fontsize: float) -> str:
    """``text`` with each of its lines wrapped to the width of ``ax`` at ``fontsize`` (a long panel title would
    otherwise run into its neighbours' titles)."""
    return wrap_to_width(text, ax.get_position().width * ax.figure.get_figwidth(), fontsize)


RANDOM_WEIGHTS = "random weights"  # the stamp on a map of a network with random weights


def stamp(ax, text: str, fontsize: float = 6):
    """A note in the lower left corner of an image panel, white on a dark box (readable over any map)."""
    return ax.text(0.03, 0.03, text, transform=ax.transAxes, fontsize=fontsize, color="white", ha="left", va="bottom",
                   bbox=dict(facecolor="black", alpha=0.6, pad=1, lw=0))


def stamp_random_weights(ax, raw_max: float, fontsize: float = 6):
    """Stamp a panel that shows a map of a random-weights network with the map's largest value before it was scaled
    for display: min-max scaling makes any map look like attention, the raw maximum shows how strong it is."""
    return stamp(ax, f"{RANDOM_WEIGHTS}\nraw max {raw_max:.2g}", fontsize)


def t_errors(samples) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per group of ``samples`` (one list of seeds' or folds' values each): the mean and the distances from it down
    and up to its 95 % t interval (0 where a group has one value: no interval)."""
    estimates = [t_mean(s) for s in samples]
    mean = np.array([e.value for e in estimates])
    lo = np.array([e.value - e.lo if e.has_interval else 0.0 for e in estimates])
    hi = np.array([e.hi - e.value if e.has_interval else 0.0 for e in estimates])
    return mean, lo, hi


def samples_with_interval(ax, x, samples, label: str, fmt: str = "-o", color=None):
    """Each group's samples (seeds, folds) as small dots at its ``x``, and their mean with its 95 % t interval as an
    error bar, the means joined by ``fmt``'s line."""
    x = np.asarray(x, dtype=float)
    mean, lo, hi = t_errors(samples)
    bars = ax.errorbar(x, mean, yerr=[lo, hi], fmt=fmt, capsize=3, color=color, label=label)
    color = bars.lines[0].get_color()
    for xi, s in zip(x, samples):
        s = np.asarray(s, dtype=float)
        ax.scatter(np.full(len(s), xi), s, s=10, color=color, alpha=0.45, linewidths=0, zorder=3)
    return bars


def samples_with_band(ax, x, samples, label: str, fmt: str = "-o", color=None):
    """As ``samples_with_interval`` with the interval drawn as a light band, for curves of many points (error bars
    of a few seeds' wide t intervals would bury the lines)."""
    mean, lo, hi = t_errors(samples)
    (line,) = ax.plot(x, mean, fmt, color=color, label=label, markersize=3)
    ax.fill_between(x, mean - lo, mean + hi, color=line.get_color(), alpha=0.12, linewidth=0)
    for xi, s in zip(x, samples):
        ax.scatter(np.full(len(s), xi), s, s=8, color=line.get_color(), alpha=0.45, linewidths=0, zorder=3)
    return line
