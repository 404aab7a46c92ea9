"""Scoring saliency maps: boxes from maps (CAM / Grad-CAM rule), IoU, the pointing game, Average Drop and
Increase in Confidence (Grad-CAM++), and deletion / insertion curves (RISE); the
scoring of several methods' maps on a set of images as the CAM papers score them, with trivial baselines beside
them, their tables and the papers' comparisons decided on paired differences (each method in a comparison must
also beat the trivial baselines), the same comparisons on a random-weights control, and the tables' notes.

Maps are (H, W) or (N, H, W) at the image's size; boxes are (x0, y0, x1, y1) in pixels, x1 / y1 exclusive.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch
from scipy import ndimage
from torchvision.transforms.functional import gaussian_blur
from tqdm import tqdm

from cnnvis.cams import as_map, build_method
from cnnvis.claims import NOT_COMPARABLE, Claim, Decision, Evidence, Threshold, all_of, claim_seed, decided
from cnnvis.models import build_model, fold_batchnorm, frozen
from cnnvis.shards import ONE_PROCESS, ShardPlan
from cnnvis.stats import Estimate, bootstrap_mean, proportion


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


METRICS = ["loc_err_15", "loc_err_20", "pointing_game", "average_drop", "increase_in_confidence", "deletion_auc",
           "insertion_auc"]
INPUT_SPACE = ("saliency", "deconvnet", "guided_backprop", "guided_gradcam")
# Trivial baselines, scored by the same rules as the methods (their maps / boxes ignore the image).
FULL_IMAGE, CENTRE_BOX, CENTRE_POINT = "baseline: full image", "baseline: centre box", "baseline: centre point"
PROPORTIONS = ("loc_err_15", "loc_err_20", "pointing_game", "increase_in_confidence")  # Wilson; the rest bootstrap


def map_scores(model, x, maps, targets, boxes, n_curve, steps, tolerance, desc="") -> dict[str, np.ndarray]:
    """Per-image scores of ``maps`` (N, H, W): localization hits (needs ``boxes``), Average Drop / Increase
    in Confidence terms on all N images, deletion / insertion AUC on the first ``n_curve``; NaN where not scored.
    Also each of those images' curves (key ``curves``: mode -> (images, steps + 1))."""
    n = len(maps)
    scores = {}
    if boxes is not None:
        for pct in (15, 20):
            scores[f"loc_err_{pct}"] = np.array([iou(box_from_map(m, pct / 100), g) < 0.5
                                                 for m, g in zip(maps, boxes)], dtype=float)
        scores["pointing_game"] = np.array([pointing_hit(m, g, tolerance) for m, g in zip(maps, boxes)], dtype=float)
    change = confidence_change(model, x[:n], maps, targets[:n])
    y, o = change["y"].numpy(), change["o"].numpy()
    scores["average_drop"] = 100 * np.clip(y - o, 0, None) / y
    scores["increase_in_confidence"] = (o > y).astype(float)
    m = min(n, n_curve)
    curves = {}
    for mode in ("deletion", "insertion") if m else ():  # n_curve = 0: no curves (the control's claims need none)
        c = torch.stack([causal_curve(model, x[i], maps[i], int(targets[i]), mode, steps)
                         for i in tqdm(range(m), desc=f"{desc} {mode}", leave=False)])
        scores[f"{mode}_auc"] = np.full(len(x), np.nan)
        scores[f"{mode}_auc"][:m] = [auc(ci) for ci in c]
        curves[mode] = c.numpy()
    for key in scores:  # every array spans the dataset: NaN past the images this map was scored on
        scores[key] = np.concatenate([scores[key], np.full(len(x) - len(scores[key]), np.nan)])
    scores["curves"] = curves
    return scores


def baseline_scores(model, x, targets, boxes, n_curve, steps, tolerance, desc="", centre_boxes=None) -> dict[str, dict]:
    """Scores of the trivial baselines: the full-image box and the centred box of the other images' mean box
    size (localization; ``centre_boxes``: those boxes when ``x`` is a shard of the images, default from ``boxes``),
    the centre point (pointing game; its distance-from-centre map also gets the faithfulness metrics, on the same
    images as the methods)."""
    h, w = x.shape[-2:]
    centre = centre_point_map(h, w).expand(len(x), h, w)
    point = map_scores(model, x, centre, targets, boxes, n_curve, steps, tolerance, f"{desc} centre point")
    out = {CENTRE_POINT: {k: v for k, v in point.items() if not k.startswith("loc_err")}}
    if boxes is not None:
        for name, fixed in ((FULL_IMAGE, [full_image_box(h, w)] * len(boxes)),
                            (CENTRE_BOX, centre_boxes_left_out(boxes, h, w) if centre_boxes is None else centre_boxes)):
            misses = np.array([iou(b, g) < 0.5 for b, g in zip(fixed, boxes)], dtype=float)
            out[name] = {"loc_err_15": misses, "loc_err_20": misses}
    return out


@torch.no_grad()
def random_control(name: str, num_classes: int, input_size: int, seed: int) -> torch.nn.Module:
    """The random-weights control's network: ``name`` built with random weights drawn under ``seed`` (the same
    init every experiment's control uses: ``build_model(pretrained=False)``), frozen, in eval mode."""
    with torch.random.fork_rng():  # the control's draw leaves the run's random stream as it was
        torch.manual_seed(seed)
        model = build_model(name, num_classes, pretrained=False, input_size=input_size)
    return frozen(model.eval())


def score_dataset(model, scorer, x, targets, methods, method_options: dict, scorecam_images: int, figure_images: int,
                  n_curve: int, steps: int, tolerance: float, boxes=None, desc="", plan: ShardPlan = ONE_PROCESS,
                  analysis: str = "scores"):
    """Per method (built by ``cams.build_method(name, model, **method_options)``): attributions (from ``model``),
    per-image scores (probabilities from ``scorer``, an inference copy of it), the first ``figure_images``
    attributions and 15 % boxes, and seconds per image; Score-CAM on its first ``scorecam_images`` only.
    ``plan``: the shards of the images (whole batches) this process scores, ``analysis`` naming them, and whether it
    merges them (None where it does not)."""
    batch_size = method_options["batch_size"]
    # from every image's box, so that a shard's baseline is the one-process baseline
    centre_boxes = None if boxes is None else centre_boxes_left_out(boxes, *x.shape[-2:])

    def scored(positions):
        return _shard_scores(model, scorer, x, targets, positions, methods, method_options, min(scorecam_images, len(x)),
                             figure_images, n_curve, steps, tolerance, boxes, centre_boxes, desc)

    return plan.run(analysis, len(x), scored, lambda parts: _merged_scores(parts, methods, n_curve, figure_images, boxes),
                    block=batch_size)


def _shard_scores(model, scorer, x, targets, positions, methods, method_options, n_scorecam, figure_images, n_curve,
                  steps, tolerance, boxes, centre_boxes, desc) -> dict[str, np.ndarray]:
    """``score_dataset``'s work on the images at ``positions`` (a contiguous run), as arrays '<name>:<what>'."""
    batch_size, first = method_options["batch_size"], int(positions[0])
    x, targets = x[positions], targets[positions]
    boxes = None if boxes is None else boxes[positions]
    n_curve = max(0, n_curve - first)  # the curves' images, the first overall, are this shard's first ones
    arrays = {"positions": positions}
    for name in methods:
        n = int((positions < n_scorecam).sum()) if name == "scorecam" else len(x)
        if n == 0:  # Score-CAM's images all lie in earlier shards
            continue
        start = time.perf_counter()
        with build_method(name, model, **method_options) as method:
            batches = [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
            attr = torch.cat([method.attribute(x[b], targets[b]) for b in tqdm(batches, desc=f"{desc} {name}", leave=False)])
        arrays[f"{name}:seconds"], arrays[f"{name}:count"] = np.array([time.perf_counter() - start]), np.array([n])
        arrays[f"{name}:shown"] = attr[:max(0, figure_images - first)].numpy()
        arrays.update(_flat(name, map_scores(scorer, x, as_map(attr), targets, boxes, n_curve, steps, tolerance,
                                             f"{desc} {name}")))
    centre_boxes = None if centre_boxes is None else centre_boxes[positions]
    for name, entry in baseline_scores(scorer, x, targets, boxes, n_curve, steps, tolerance, desc, centre_boxes).items():
        arrays.update(_flat(name, entry))
    return arrays


def _flat(name: str, entry: dict) -> dict[str, np.ndarray]:
    curves = {f"{name}:curves_{mode}": c for mode, c in entry.get("curves", {}).items()}
    return {**{f"{name}:{metric}": v for metric, v in entry.items() if metric != "curves"}, **curves}


def _merged_scores(parts, methods, n_curve, figure_images, boxes):
    """``score_dataset``'s (scores, seconds, shown, predicted boxes) from its shards' arrays, in image order: the
    per-image scores and curves concatenated (NaN where a shard scored none), the mean curves taken after."""
    lengths = [len(p["positions"]) for p in parts]
    scores, seconds, shown, predicted_boxes = {}, {}, {}, {}
    for name in [*methods, CENTRE_POINT, FULL_IMAGE, CENTRE_BOX]:
        metrics = [m for m in METRICS if any(f"{name}:{m}" in p for p in parts)]
        if not metrics:
            continue
        scores[name] = {m: np.concatenate([p.get(f"{name}:{m}", np.full(n, np.nan)) for p, n in zip(parts, lengths)])
                        for m in metrics}
        if name in (*methods, CENTRE_POINT):
            modes = ("deletion", "insertion") if n_curve else ()
            scores[name]["curves"] = {mode: torch.from_numpy(np.concatenate(
                [p[f"{name}:curves_{mode}"] for p in parts if f"{name}:curves_{mode}" in p])).mean(0).numpy()
                for mode in modes}
        if name in methods:
            seconds[name] = sum(float(p[f"{name}:seconds"][0]) for p in parts if f"{name}:seconds" in p) / sum(
                int(p[f"{name}:count"][0]) for p in parts if f"{name}:count" in p)
            shown[name] = torch.from_numpy(np.concatenate([p[f"{name}:shown"] for p in parts if f"{name}:shown" in p]))
            if boxes is not None:
                predicted_boxes[name] = [box_from_map(m, 0.15) for m in as_map(shown[name])[:figure_images]]
    return scores, seconds, shown, predicted_boxes


def estimate(metric: str, values: np.ndarray) -> Estimate:
    """Mean over the scored images with its 95 % interval: Wilson for shares (error rates, hits), bootstrap
    over images for the rest."""
    values = values[np.isfinite(values)]
    return proportion(values.astype(bool)) if metric in PROPORTIONS else bootstrap_mean(values)


def summary_metrics(scores, dataset: str) -> dict[str, float]:
    """Each method's and baseline's mean per scored metric in the tables' units (shares in %) and the images behind
    it (``_n``), keyed 'dataset/method/metric'."""
    metrics = {}
    for method, per_image in scores.items():
        for metric in METRICS:
            values = per_image.get(metric)
            if values is not None and np.isfinite(values).any():
                e = estimate(metric, values)
                metrics[f"{dataset}/{method}/{metric}"] = e.value * (100 if metric in PROPORTIONS else 1)
                metrics[f"{dataset}/{method}/{metric}_n"] = e.n
    return metrics


def metrics_table(scores, seconds, deconv_has_switches: bool, boxed: bool) -> pd.DataFrame:
    """One row per method and baseline: each metric as 'mean [95 % interval] (n = images)', in % except the AUCs;
    with ``boxed`` a column says how each row's localization is to be read."""
    rows = []
    for name, per_image in scores.items():
        row = {"method": name, "map": "trivial baseline" if name.startswith("baseline") else
               "input space" if name in INPUT_SPACE else "class activation map",
               "seconds_per_image": seconds.get(name, np.nan), "localization": "CAM box rule"}
        if name == "deconvnet" and not deconv_has_switches:
            row["map"] = "input space, one fixed map per class: no max-pool switches, the image does not enter"
        if name in INPUT_SPACE:
            row["localization"] = ("not comparable: raw 15 %/20 %-of-max box on an input-space map (the papers "
                                   "boxed these after segmentation)")
        if name == "deconvnet" and not deconv_has_switches:
            row["localization"] += "; deconvnet without max-pool switches: one fixed map per class, whatever the image"
        if name.startswith("baseline"):
            row["localization"] = "trivial baseline"
        for metric in METRICS:
            values = per_image.get(metric)
            if values is None or not np.isfinite(values).any():
                row[metric] = "-"
                continue
            scale, digits = (1, 3) if metric.endswith("auc") else (100 if metric in PROPORTIONS else 1, 1)
            row[metric] = estimate(metric, values).format(digits, scale)
            if name in INPUT_SPACE and metric.startswith("loc_err"):
                row[metric] = "not comparable"
        if not boxed:
            del row["localization"]
        rows.append(row)
    df = pd.DataFrame(rows)
    return df[[c for c in df.columns if not (df[c] == "-").all()]]  # metrics no row was scored on (no boxes)


def with_paper_numbers(df: pd.DataFrame, papers: dict) -> pd.DataFrame:
    """Our columns, then for each metric that a paper reports for the method (``papers``: method -> {metric:
    [(value, source), ...]}, see ``published_by_method``): each paper's number as printed, naming the paper (two
    papers may print different numbers for the same method), and the sources in full."""
    df = df.copy()
    for metric in METRICS:
        cells = df["method"].map(lambda name: "; ".join(
            f"{value:g} ({source.split(',')[0].replace(' et al.', '')})"
            for value, source in papers.get(name, {}).get(metric, [])))
        if metric in df.columns and (cells != "").any():
            df[f"paper_{metric}"] = cells
    df["paper_source"] = df["method"].map(
        lambda name: " | ".join(sorted({s for numbers in papers.get(name, {}).values() for _, s in numbers})))
    return df


# The papers' comparisons, decided on paired per-image differences. Every comparison also asks each method in it to
# beat the trivial baselines its table shows (the centre-point map, the full-image and centre boxes): where a map
# that ignores the image does as well, the method has shown nothing on that metric.
LOWER_IS_BETTER = ("loc_err_15", "loc_err_20", "average_drop", "deletion_auc")
METRIC_NAMES = {"average_drop": "Average Drop", "increase_in_confidence": "Increase in Confidence",
                "deletion_auc": "deletion AUC", "insertion_auc": "insertion AUC", "loc_err_15": "localization error",
                "loc_err_20": "localization error", "pointing_game": "pointing game"}


@dataclass(frozen=True)
class Published:
    """Numbers a paper printed for one metric, as printed: ``values`` maps our method names to them."""

    paper: str  # "Wang et al. 2020"
    where: str  # the table and row: "Tab. 1, row 'Average Drop (%)'"
    setting: str  # the network and images they were measured on
    metric: str
    values: dict

    def quote(self, methods) -> str:
        shown = ", ".join(f"{m} {self.values[m]:g}" for m in methods if m in self.values)
        return f"{shown} ({self.paper}, {self.where}; {self.setting})"


@dataclass(frozen=True)
class Comparison:
    """A paper's claim that ``method`` scores better than each of ``others`` on each of ``metrics`` (for a
    localization claim, ``others`` is empty: the method against the trivial boxes)."""

    paper: str
    source: str
    method: str
    others: tuple = ()
    metrics: tuple = ("average_drop", "increase_in_confidence")


def paper_number(published: list[Published], paper: str, metric: str, methods) -> str:
    """The paper's own numbers for ``metric`` and ``methods``, with table and row, or 'not reported'."""
    quotes = [p.quote(methods) for p in published if p.paper == paper and p.metric == metric
              and any(m in p.values for m in methods)]
    return "; ".join(quotes) or "not reported"


def published_by_method(published: list[Published]) -> dict:
    """method -> metric -> [(value, 'paper, table and row; setting')], for ``with_paper_numbers``."""
    out = {}
    for p in published:
        for method, value in p.values.items():
            out.setdefault(method, {}).setdefault(p.metric, []).append((value, f"{p.paper}, {p.where}; {p.setting}"))
    return out


def per_image(scores, name: str, metric: str) -> np.ndarray:
    """``name``'s per-image ``metric`` in the tables' units (shares as 0 / 100 per image), NaN where not scored."""
    return np.asarray(scores[name][metric], dtype=float) * (100 if metric in PROPORTIONS else 1)


def beats(scores, metric: str, a: str, b: str, seed: int) -> Evidence:
    """Evidence that ``a`` scores better than ``b`` image by image: the 95 % interval of the paired difference a - b
    (over the images both were scored on) lies below 0 where lower is better, above 0 otherwise."""
    return Evidence("paired_difference", (per_image(scores, a, metric), per_image(scores, b, metric)),
                    Threshold(0.0, above=metric not in LOWER_IS_BETTER), seed)


def short(name: str) -> str:
    return {CENTRE_POINT: "centre-point map"}.get(name, name.removeprefix("baseline: "))


def scored(scores, name: str, metric: str) -> bool:
    return name in scores and metric in scores[name] and bool(np.isfinite(scores[name][metric]).any())


def ordering_claim(scores, comparison: Comparison, metric: str, text: str, paper_number_text: str,
                   pairs: list[tuple[str, str]], baselines: list[str]) -> Claim:
    """A claim made of paired comparisons on ``metric``: for each (a, b) in ``pairs``, a scores better than b on the
    same images. Reproduced when every interval lies on the paper's side of 0, contradicted when any lies on the
    other side, inconclusive otherwise; not comparable when a method in it was not scored in this run."""
    digits = 3 if metric.endswith("auc") else 1
    labels = [f"{a} - {short(b)}" for a, b in pairs]
    rule = Threshold(0.0, above=metric not in LOWER_IS_BETTER)
    rule_text = (rule.text(f"every paired difference in {METRIC_NAMES[metric]} ({', '.join(labels)}; per image, "
                           f"over the images both were scored on)")
                 + " (every difference must hold: contradicted if any is, else inconclusive if any includes 0)")
    scale = 100 if metric in PROPORTIONS else 1
    baseline = "; ".join(f"{short(b)}: {estimate(metric, scores[b][metric]).format(digits, scale)}"
                         for b in baselines if scored(scores, b, metric))
    missing = [n for n in sorted({n for pair in pairs for n in pair}) if not scored(scores, n, metric)]
    if missing:
        return Claim(comparison.paper, comparison.source, text, paper_number_text, "-", 0, baseline or "-", rule_text,
                     NOT_COMPARABLE, f"not scored in this run: {', '.join(missing)}")
    seed = claim_seed(comparison.source, text)
    evidence = [beats(scores, metric, a, b, seed) for a, b in pairs]
    estimates = [e.estimate() for e in evidence]
    ours = "; ".join(f"{label}: {est.format(digits)}" for label, est in zip(labels, estimates))
    claim = decided(comparison.paper, comparison.source, text, paper_number_text, ours, min(e.n for e in estimates),
                    baseline or "-", rule_text, evidence)
    # the same verdict, with each condition's reason named by its difference
    named = all_of([Decision(d.verdict, f"{label}: {d.reason}")
                    for label, d in zip(labels, (e.rule.decide(est) for e, est in zip(evidence, estimates)))])
    return replace(claim, reason=named.reason)


def faithfulness_claims(scores, dataset: str, comparisons: list[Comparison], published: list[Published]) -> list[Claim]:
    """Chattopadhay 2018 (Grad-CAM++ over Grad-CAM), Wang 2020 (Score-CAM over both): ``method`` beats each of
    ``others`` on the same images, and every method in the comparison beats the centre-point map."""
    claims = []
    for c in comparisons:
        if not c.others:
            continue
        for metric in c.metrics:
            word = "lower" if metric in LOWER_IS_BETTER else "higher"
            text = f"{c.method} has a {word} {METRIC_NAMES[metric]} than {' and '.join(c.others)} [{dataset}]"
            pairs = [(c.method, o) for o in c.others] + [(m, CENTRE_POINT) for m in (c.method, *c.others)]
            number = paper_number(published, c.paper, metric, (c.method, *c.others))
            claims.append(ordering_claim(scores, c, metric, text, number, pairs, [CENTRE_POINT]))
    return claims


def localization_claims(scores, comparisons: list[Comparison], published: list[Published],
                        dataset: str = "caltech101") -> list[Claim]:
    """Zhou 2016 (CAM, 20 % rule) and Selvaraju 2017 (Grad-CAM, 15 % rule): their boxes localize the object, i.e.
    miss less often than the full-image box and the centred box on the same images."""
    claims = []
    baselines = [FULL_IMAGE, CENTRE_BOX]
    for c in comparisons:
        if c.others:
            continue
        for metric in c.metrics:
            text = f"{c.method}'s box localizes the object (error % at IoU < 0.5) [{dataset}]"
            number = paper_number(published, c.paper, metric, [c.method])
            number += " (top-1: also counts wrong classes)" if number != "not reported" else ""
            pairs = [(c.method, b) for b in baselines]
            claims.append(ordering_claim(scores, c, metric, text, number, pairs, baselines))
    return claims


def image_range(counts: dict[str, int]) -> str:
    """'64', or '1-64' where methods were scored on different numbers of images."""
    lo, hi = min(counts.values()), max(counts.values())
    return f"{lo}" if lo == hi else f"{lo}-{hi}"


def paper_claims(scores, dataset: str, boxed: bool, comparisons: list[Comparison],
                 published: list[Published]) -> list[Claim]:
    """The papers' comparisons on one set of images: the faithfulness orderings, and where the images have object
    boxes (``boxed``) the localization claims."""
    claims = faithfulness_claims(scores, dataset, comparisons, published)
    return claims + (localization_claims(scores, comparisons, published, dataset) if boxed else [])


def control_claims(network: str, num_classes: int, input_size: int, seed: int, sets: dict, methods: list[str],
                   method_options: dict, comparisons: list[Comparison], published: list[Published], images: int,
                   scorecam_images: int, steps: int, tolerance: float,
                   plan: ShardPlan = ONE_PROCESS) -> tuple[list[Claim] | None, dict]:
    """The same claims on the same architecture with random weights (``random_control`` under ``seed``), from those
    of ``methods`` the comparisons name, on the first ``images`` images of each set (``sets``: name -> (images,
    boxes or None)), Score-CAM on the first ``scorecam_images`` (0: left out); with the seconds each set took.
    ``plan``: the shards of each set this process scores; no claims (None) where it does not merge them."""
    model = random_control(network, num_classes, input_size, seed)
    scorer = fold_batchnorm(model).to(memory_format=torch.channels_last)
    claimed = {name for c in comparisons for name in (c.method, *c.others)}
    methods = [name for name in methods if name in claimed and (name != "scorecam" or scorecam_images)]
    claims, seconds = [], {}
    for name, (x, boxes) in sets.items():
        start = time.perf_counter()
        k = min(images, len(x))
        x, boxes = x[:k], None if boxes is None else boxes[:k]
        with torch.no_grad():
            targets = torch.cat([model(x[i:i + 32]) for i in range(0, k, 32)]).argmax(1)
        scored = score_dataset(model, scorer, x, targets, methods, method_options, scorecam_images, 0, 0, steps,
                               tolerance, boxes, f"control {name}", plan, f"control-{name}")
        if scored is not None:
            claims += paper_claims(scored[0], name, boxes is not None, comparisons, published)
        seconds[name] = time.perf_counter() - start
    return claims if plan.merges else None, seconds


def claims_notes(network: str, seed: int, n_images: dict, control_images: int, control_scorecam_images: int,
                 control_seconds: dict) -> str:
    """The claims table's notes: how each comparison is decided, and the random-weights control that ran (its
    seconds per set in ``control_seconds``; none ran where that is empty) on ``n_images`` (set -> images)."""
    control = (
        f"Random-weights control: {network} with random init (build_model(pretrained=False), torch seed "
        f"{seed}), the same claims on the first "
        f"{', '.join(f'{min(control_images, n)} {name}' for name, n in n_images.items())} images, Score-CAM "
        f"on the first {control_scorecam_images} of each (its one forward pass per channel dominates the control's "
        "cost), every map of its own top-1 class "
        f"({', '.join(f'{s:.0f} s on {name}' for name, s in control_seconds.items())}). A claim the control "
        "also reproduces holds for random weights too (uninformative); its number and answer fill the control "
        "column. " if control_seconds else "No random-weights control (experiment.control_images = 0). ")
    return (
        "Each comparison is the mean over the same images of a per-image difference (Average Drop in %, Increase in "
        "Confidence as a 0/100 indicator, localization error as a 0/100 miss indicator), with a 95 % bootstrap "
        "interval over those images; n is the fewest images behind any difference in the row (Score-CAM's first "
        "images where Score-CAM takes part). A comparison is reproduced only when the method beats each other method "
        "AND every method in it beats the trivial baselines its table shows, each paired per image: the centre-point "
        "map for Average Drop and Increase in Confidence, the full-image and centre boxes for localization; "
        "contradicted when any difference lies on the wrong side of 0, inconclusive when any interval includes 0 "
        "(the reason names each difference and the smallest effect it could have detected). The paper's number "
        "quotes that paper's own table and row (Wang et al. 2020 print their own Grad-CAM and Grad-CAM++ numbers); "
        "the papers measured VGG-16 on ILSVRC images, ours is "
        f"{network} on the images of this run: the rules compare orderings, not values. " + control
        + "Old rules (before issue 23): the faithfulness comparisons were 'reproduced' when every paired difference "
        "between the methods lay on the paper's side of 0 and 'not reproduced' otherwise, with the centre-point map "
        "shown but not part of the rule; the localization claims were 'reproduced' when the paired error difference "
        "to the full-image and centre boxes lay below 0 for both and 'not reproduced' otherwise; the Score-CAM rows "
        "quoted Chattopadhay et al. 2018's Grad-CAM / Grad-CAM++ numbers instead of Wang et al. 2020's.")


def metrics_notes(dataset: str, network: str, n: int, input_size: int, top1, curve_n: dict, deconv_has_switches: bool,
                  layer: str, layercam_layers: list[str], methods: list[str], scorecam_images: int, curve_steps: int,
                  pointing_tolerance: float) -> str:
    """The notes under one set's metrics table (``dataset`` imagenet: no boxes, with the model's ``top1`` Estimate;
    else the boxed Caltech-101 images): what each column measures on how many images, and what it can be read for."""
    scorecam_n = min(scorecam_images, n)
    common = (
        f"{n} images at {input_size} px; every map explains the model's top-1 class. Each cell: mean "
        "[95 % interval] (n = images scored): Wilson intervals for shares (localization error, pointing game, "
        "Increase in Confidence), bootstrap over images for means (Average Drop, deletion / insertion AUC). "
        + (f"Score-CAM (one forward pass per channel of {layer} per image) is scored on its first {scorecam_n} "
           "images. " if "scorecam" in methods else
           "Score-CAM is not in this run (one forward pass per channel per image; its maps equal pytorch-grad-cam's, "
           "see tests/test_cams.py). ")
        + f"Deletion / insertion on the first {image_range(curve_n)} images "
        f"({curve_steps} steps; deletion sets pixels to 0, insertion starts from an 11-px sigma-5 Gaussian blur, "
        "as RISE). Average Drop / Increase in Confidence use softmax probabilities on the image times its "
        "min-max-scaled map (Grad-CAM++ definitions). Input-space methods (saliency, deconvnet, guided backprop, "
        "guided Grad-CAM) are reduced to a map by max_c |.| (Simonyan). "
        + ("" if deconv_has_switches else
           f"{network} has no max-pooling, so the deconvnet's backward pass ignores the image (its rule "
           "rectifies the signal whatever the forward pass did, everything else is linear): its map is one fixed "
           "map per class (Mahendran & Vedaldi 2016), a baseline rather than an explanation; guided backprop "
           "(Springenberg et al. 2015) is the image-dependent variant. ")
        + f"layercam is LayerCAM at the last layer alone; layercam_fused fuses {', '.join(layercam_layers)} as "
        "its paper. Baseline row 'centre point': a map that is highest at the image centre and falls off with the "
        "distance from it, scored by every rule (pointing game: the centre point). The papers' numbers are for "
        "other networks (VGG-16, ResNet-50) on other ILSVRC images: compare orderings, not values."
    )
    if dataset == "imagenet":
        return (f"ImageNet validation subset (no boxes: no localization columns). The model's top-1 accuracy on "
                f"these images: {top1.format(1, 100)}. " + common)
    return ("Caltech-101 images with object boxes (24 categories, round-robin). The model is ImageNet-trained, "
            "so localization is class-agnostic (GT-known): error = % of images whose map's box (largest component "
            "above 15% / 20% of the maximum) has IoU < 0.5 with the object's box; the papers' top-1 error also counts "
            "wrong classes. Pointing game: the map's maximum within "
            f"{pointing_tolerance:g} px of the box (Zhang et al. 2016). Localization on the input-space maps is "
            "marked not comparable: the papers boxed those maps after a segmentation step (Simonyan et al. 2013: "
            "GraphCut), not with the raw threshold on a speckled map. Trivial baselines: 'full image' boxes the "
            "whole image; 'centre box' is a centred box whose width and height are the mean over the other images' "
            "object boxes of this run (leave-one-out, so an image's own box never informs its baseline). " + common)
