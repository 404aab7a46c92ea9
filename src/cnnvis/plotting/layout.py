"""A figure's layout checked in code, on the drawn figure: text that overlaps other text, text cut by its clip box,
legends over plotted data, and text too small to read (issue 26).

``layout_problems(fig)`` draws the figure until its text stops moving (so tight and constrained layouts have
settled) and returns one line per problem, empty when the figure is readable. ``cnnvis.results.Results.figure``
runs it on every figure it saves and records what it finds in ``layout_problems.json`` beside the figures.
"""

from __future__ import annotations

import itertools

import numpy as np
from matplotlib.collections import LineCollection, PathCollection, PolyCollection
from matplotlib.transforms import Bbox

MIN_POINTS = 6.0  # the smallest readable text at the saved size
TOLERANCE_PX = 1.0  # boxes that share less than this in both directions only touch (anti-aliasing, padding)
MAX_DRAWS = 4  # a layout that still moves after this many draws is checked as it last stood
SAMPLES_PER_SEGMENT = 8  # points checked along each line segment for a legend covering it


def _label(text) -> str:
    s = " ".join(text.get_text().split())
    return repr(s if len(s) <= 40 else s[:37] + "...")


def _visible(artist) -> bool:
    return artist.get_visible() and (artist.get_alpha() is None or artist.get_alpha() > 0)


def _axis_texts(ax) -> list:
    if not ax.axison:
        return []
    found = []
    for axis in (ax.xaxis, ax.yaxis):
        if not axis.get_visible():
            continue
        found += [axis.label, axis.get_offset_text()]
        lo, hi = sorted(axis.get_view_interval())
        for tick in axis.get_major_ticks() + axis.get_minor_ticks():
            if lo - 1e-9 * max(1.0, abs(hi - lo)) <= tick.get_loc() <= hi + 1e-9 * max(1.0, abs(hi - lo)):
                found += [tick.label1, tick.label2]  # ticks outside the view are laid out but never drawn
    return found


def texts(fig) -> list:
    """Every drawn, non-empty text of ``fig``: figure texts, titles, axis labels, tick labels, legends."""
    found = list(fig.texts)
    for attr in ("_suptitle", "_supxlabel", "_supylabel"):
        if getattr(fig, attr, None) is not None:
            found.append(getattr(fig, attr))
    for legend in fig.legends:
        found += [*legend.get_texts(), legend.get_title()]
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        found += [ax.title, ax._left_title, ax._right_title, *ax.texts, *_axis_texts(ax)]
        if ax.get_legend() is not None and _visible(ax.get_legend()):
            found += [*ax.get_legend().get_texts(), ax.get_legend().get_title()]
    return [t for t in dict.fromkeys(found) if _visible(t) and t.get_text().strip()]


def _overlap(a: Bbox, b: Bbox) -> bool:
    return (min(a.x1, b.x1) - max(a.x0, b.x0) > TOLERANCE_PX) and (min(a.y1, b.y1) - max(a.y0, b.y0) > TOLERANCE_PX)


def _inside(box: Bbox, clip: Bbox) -> bool:
    return (box.x0 >= clip.x0 - TOLERANCE_PX and box.x1 <= clip.x1 + TOLERANCE_PX and
            box.y0 >= clip.y0 - TOLERANCE_PX and box.y1 <= clip.y1 + TOLERANCE_PX)


def _densify(xy: np.ndarray) -> np.ndarray:
    """Points along a polyline (display coordinates), so a legend lying across a segment is caught."""
    if len(xy) < 2:
        return xy
    t = np.linspace(0, 1, SAMPLES_PER_SEGMENT, endpoint=False)[None, :, None]
    return np.concatenate([(xy[:-1, None] + t * (xy[1:, None] - xy[:-1, None])).reshape(-1, 2), xy[-1:]])


def data_points(ax) -> np.ndarray:
    """Display coordinates of the plotted lines and markers of ``ax``: line vertices and points along their
    segments, error-bar segments, scatter markers."""
    parts = []
    for line in ax.lines:
        if _visible(line) and len(line.get_xydata()):
            parts.append(_densify(line.get_transform().transform(line.get_xydata())))
    for coll in ax.collections:
        if _visible(coll) and isinstance(coll, LineCollection):  # error bars, vlines
            parts += [_densify(coll.get_transform().transform(s)) for s in coll.get_segments() if len(s)]
        elif _visible(coll) and isinstance(coll, PathCollection):  # scatter markers
            parts.append(coll.get_offset_transform().transform(coll.get_offsets()))
    points = np.concatenate(parts) if parts else np.zeros((0, 2))
    return points[np.isfinite(points).all(1)]


def data_areas(ax) -> list:
    """Display-space outlines of the filled data of ``ax``: bars and interval bands (images are left to the eye)."""
    areas = [p.transformed(coll.get_transform()) for coll in ax.collections
             if _visible(coll) and isinstance(coll, PolyCollection) for p in coll.get_paths()]
    return areas + [patch.get_path().transformed(patch.get_transform()) for patch in ax.patches if _visible(patch)]


def covered(box: Bbox, ax) -> int:
    """How many of ``ax``'s drawn data points and filled areas lie under ``box`` (data outside the axes is clipped
    away, so a legend beside the axes covers none)."""
    shown = Bbox.intersection(box, ax.bbox)
    if shown is None:
        return 0
    points = data_points(ax)
    inside = ((points[:, 0] > shown.x0) & (points[:, 0] < shown.x1) & (points[:, 1] > shown.y0) &
              (points[:, 1] < shown.y1))
    return int(inside.sum()) + sum(area.intersects_bbox(shown, filled=True) for area in data_areas(ax))


def _settled_text_boxes(fig, max_draws: int = MAX_DRAWS):
    """(renderer, texts, their boxes) once a draw no longer moves any text: constrained layout around fixed-aspect
    image axes settles only on its second pass, and savefig draws again, so the first pass is not what is saved."""
    boxes = None
    for _ in range(max_draws):
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        found = texts(fig)
        drawn = {t: t.get_window_extent(renderer) for t in found}
        if boxes is not None and all(t in boxes and np.allclose(drawn[t].extents, boxes[t].extents) for t in found):
            break
        boxes = drawn
    return renderer, found, drawn


def layout_problems(fig) -> list[str]:
    """One line per readability problem of ``fig`` (empty: none), in its settled layout."""
    renderer, found, boxes = _settled_text_boxes(fig)
    problems = [f"text smaller than {MIN_POINTS:g} pt ({t.get_fontsize():.1f} pt): {_label(t)}"
                for t in found if t.get_fontsize() < MIN_POINTS]
    for a, b in itertools.combinations(found, 2):
        if _overlap(boxes[a], boxes[b]):
            problems.append(f"texts overlap: {_label(a)} and {_label(b)}")
    for t in found:
        clip = t.get_clip_box() if t.get_clip_on() else None
        if clip is not None and not _inside(boxes[t], clip):
            problems.append(f"text cut by its clip box: {_label(t)}")
    for ax in fig.axes:
        legend = ax.get_legend()
        if legend is None or not _visible(legend) or not ax.get_visible():
            continue
        under = covered(legend.get_window_extent(renderer), ax)
        if under:
            problems.append(f"legend covers plotted data in {ax.get_title() or 'untitled axes'!r} "
                            f"({under} points or areas under it)")
    return problems
