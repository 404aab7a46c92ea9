"""The CAM / Grad-CAM family side by side (Grad-CAM Fig. 1, Score-CAM Fig. 1 layout) on EfficientNet-Lite0,
on ImageNet validation images and on the Caltech-101 images with object boxes, and scored as their papers
score them: localization error (CAM box rule at 15% / 20%), pointing game, Average Drop / Increase in
Confidence (Grad-CAM++) and deletion / insertion AUC (RISE).

Every map explains the model's top-1 class. Caltech-101 images go through the ImageNet model (its
1,000 classes do not include Caltech's), so localization there is class-agnostic: the box of the predicted
class's map against the object's box ("GT-known" localization).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from cnnvis import localization as loc
from cnnvis.cams import LayerCAM, as_map, make_method
from cnnvis.claims import Claim, claims_frame, decide
from cnnvis.config import DatasetConfig, ExperimentConfig, ResizeMode
from cnnvis.data import caltech101_boxes, decode_to_cache, imagenet_classes, index_caltech101
from cnnvis.deconvnet import has_switches
from cnnvis.gap import feeds_gap_head
from cnnvis.models import CNN, TRANSFORMER, UnsupportedModelError, fold_batchnorm, frozen, resolve_layers
from cnnvis.plotting.cams import curves_figure, method_grid
from cnnvis.runner import images_from_config, model_from_config
from cnnvis.stats import Estimate, bootstrap_mean, paired_difference, proportion

ALL_METHODS = ["cam", "gradcam", "gradcam++", "scorecam", "layercam", "layercam_fused", "saliency", "deconvnet",
               "guided_backprop", "guided_gradcam"]

# Published numbers (other networks, other images): method -> {metric: (value, source)}.
PAPERS = {
    "cam": {"loc_err_20": (57.20, "Zhou 2016 Tab. 2, VGGnet-GAP, ILSVRC val top-1")},
    "gradcam": {"loc_err_15": (56.51, "Selvaraju 2017 Tab. 1, VGG-16, ILSVRC-15 val top-1"),
                "average_drop": (46.56, "Chattopadhay 2018 Tab. 1, VGG-16"),
                "increase_in_confidence": (13.42, "Chattopadhay 2018 Tab. 1, VGG-16"),
                "deletion_auc": (0.1232, "Petsiuk 2018 Tab. 2, ResNet-50"),
                "insertion_auc": (0.6766, "Petsiuk 2018 Tab. 2, ResNet-50")},
    "gradcam++": {"average_drop": (36.84, "Chattopadhay 2018 Tab. 1, VGG-16"),
                  "increase_in_confidence": (17.05, "Chattopadhay 2018 Tab. 1, VGG-16")},
    "scorecam": {"average_drop": (31.5, "Wang 2020 Tab. 1, VGG-16"),
                 "increase_in_confidence": (30.6, "Wang 2020 Tab. 1, VGG-16")},
}
METRICS = ["loc_err_15", "loc_err_20", "pointing_game", "average_drop", "increase_in_confidence", "deletion_auc",
           "insertion_auc"]


MODEL_KINDS = [CNN, TRANSFORMER]  # the networks it runs (cnnvis.config.check_model_kind)


@dataclass
class Config(ExperimentConfig):
    layer: Optional[str] = None  # None: the model's last conv layer (feeds GAP + fc: CAM is exact there)
    layercam_layers: Optional[list[str]] = None  # fused LayerCAM; None: the model's LayerCAM layers
    methods: list[str] = field(default_factory=lambda: list(ALL_METHODS))
    imagenet_images: int = 24
    caltech_images: int = 40  # annotated Caltech-101 images (24 categories), spread over the categories
    curve_images: int = 3  # of those, the first ones that also get deletion / insertion curves
    curve_steps: int = 10
    scorecam_images: int = 1  # Score-CAM (1,280 masked forward passes per image) is scored on the first ones only
    scorecam_batch_size: int = 4
    batch_size: int = 8
    figure_images: int = 4
    pointing_tolerance: float = 15.0


def caltech_with_boxes(cfg, n: int):
    """``n`` Caltech-101 images that have object boxes, round-robin over their categories (seeded), stretched
    to the input size so the whole object stays in view; with their boxes in those pixels."""
    root = cfg.dataset.root
    index = index_caltech101(root)
    n = min(n, 4) if cfg.smoke else n
    boxes = caltech101_boxes(index, root)
    rng = np.random.default_rng(cfg.seed)
    by_class = {}
    for i in rng.permutation([i for i, p in enumerate(index.paths) if p in boxes]):
        by_class.setdefault(int(index.labels[i]), []).append(int(i))
    order = [q[r] for r in range(max(map(len, by_class.values()), default=0)) for q in by_class.values() if r < len(q)]
    index = index.select(np.sort(np.asarray(order[:n], dtype=np.int64)))
    dcfg = DatasetConfig(name="caltech101", root=root, resize_mode=ResizeMode.stretch)
    images = decode_to_cache(index, cfg.model.input_size, "stretch", cfg.cache_dir, dcfg.num_workers)
    gt = np.stack([images.box_in_image(i, boxes[p]) for i, p in enumerate(images.paths)])
    return images, gt


INPUT_SPACE = ("saliency", "deconvnet", "guided_backprop", "guided_gradcam")
# Trivial baselines, scored by the same rules as the methods (their maps / boxes ignore the image).
FULL_IMAGE, CENTRE_BOX, CENTRE_POINT = "baseline: full image", "baseline: centre box", "baseline: centre point"
PROPORTIONS = ("loc_err_15", "loc_err_20", "pointing_game", "increase_in_confidence")  # Wilson; the rest bootstrap


def build_method(name, model, ecfg):
    if name == "layercam_fused":
        return LayerCAM(model, list(ecfg.layercam_layers), ecfg.batch_size)
    if name == "scorecam":
        return make_method(name, model, ecfg.layer, batch_size=ecfg.scorecam_batch_size)
    return make_method(name, model, ecfg.layer, batch_size=ecfg.batch_size)


def map_scores(model, x, maps, targets, boxes, n_curve, steps, tolerance, desc="") -> dict[str, np.ndarray]:
    """Per-image scores of ``maps`` (N, H, W): localization hits (needs ``boxes``), Average Drop / Increase
    in Confidence terms on all N images, deletion / insertion AUC on the first ``n_curve``; NaN where not scored.
    Also the mean curves (key ``curves``)."""
    n = len(maps)
    scores = {}
    if boxes is not None:
        for pct in (15, 20):
            scores[f"loc_err_{pct}"] = np.array([loc.iou(loc.box_from_map(m, pct / 100), g) < 0.5
                                                 for m, g in zip(maps, boxes)], dtype=float)
        scores["pointing_game"] = np.array([loc.pointing_hit(m, g, tolerance) for m, g in zip(maps, boxes)], dtype=float)
    change = loc.confidence_change(model, x[:n], maps, targets[:n])
    y, o = change["y"].numpy(), change["o"].numpy()
    scores["average_drop"] = 100 * np.clip(y - o, 0, None) / y
    scores["increase_in_confidence"] = (o > y).astype(float)
    m = min(n, n_curve)
    curves = {}
    for mode in ("deletion", "insertion"):
        c = torch.stack([loc.causal_curve(model, x[i], maps[i], int(targets[i]), mode, steps)
                         for i in tqdm(range(m), desc=f"{desc} {mode}", leave=False)])
        scores[f"{mode}_auc"] = np.full(len(x), np.nan)
        scores[f"{mode}_auc"][:m] = [loc.auc(ci) for ci in c]
        curves[mode] = c.mean(0).numpy()
    for key in scores:  # every array spans the dataset: NaN past the images this map was scored on
        scores[key] = np.concatenate([scores[key], np.full(len(x) - len(scores[key]), np.nan)])
    scores["curves"] = curves
    return scores


def baseline_scores(model, x, targets, boxes, ecfg, desc) -> dict[str, dict]:
    """Scores of the trivial baselines: the full-image box and the centred box of the other images' mean box
    size (localization), the centre point (pointing game; its distance-from-centre map also gets the
    faithfulness metrics, on the same images as the methods)."""
    h, w = x.shape[-2:]
    centre = loc.centre_point_map(h, w).expand(len(x), h, w)
    point = map_scores(model, x, centre, targets, boxes, ecfg.curve_images, ecfg.curve_steps,
                       ecfg.pointing_tolerance, f"{desc} centre point")
    out = {CENTRE_POINT: {k: v for k, v in point.items() if not k.startswith("loc_err")}}
    if boxes is not None:
        for name, fixed in ((FULL_IMAGE, [loc.full_image_box(h, w)] * len(boxes)),
                            (CENTRE_BOX, loc.centre_boxes_left_out(boxes, h, w))):
            misses = np.array([loc.iou(b, g) < 0.5 for b, g in zip(fixed, boxes)], dtype=float)
            out[name] = {"loc_err_15": misses, "loc_err_20": misses}
    return out


def score_dataset(model, scorer, x, targets, methods, ecfg, boxes=None, desc=""):
    """Per method: attributions (from ``model``), per-image scores (probabilities from ``scorer``, an inference
    copy of it) and timing; Score-CAM on its first ``scorecam_images`` only."""
    scores, seconds, shown, predicted_boxes = {}, {}, {}, {}
    for name in methods:
        n = min(ecfg.scorecam_images, len(x)) if name == "scorecam" else len(x)
        start = time.perf_counter()
        with build_method(name, model, ecfg) as method:
            batches = [slice(i, min(i + ecfg.batch_size, n)) for i in range(0, n, ecfg.batch_size)]
            attr = torch.cat([method.attribute(x[b], targets[b]) for b in tqdm(batches, desc=f"{desc} {name}", leave=False)])
        seconds[name] = (time.perf_counter() - start) / n
        maps = as_map(attr)
        shown[name] = attr[: ecfg.figure_images]
        if boxes is not None:
            predicted_boxes[name] = [loc.box_from_map(m, 0.15) for m in maps[: ecfg.figure_images]]
        scores[name] = map_scores(scorer, x, maps, targets, boxes, ecfg.curve_images, ecfg.curve_steps,
                                  ecfg.pointing_tolerance, f"{desc} {name}")
    scores.update(baseline_scores(scorer, x, targets, boxes, ecfg, desc))
    return scores, seconds, shown, predicted_boxes


def estimate(metric: str, values: np.ndarray) -> Estimate:
    """Mean over the scored images with its 95 % interval: Wilson for shares (error rates, hits), bootstrap
    over images for the rest."""
    values = values[np.isfinite(values)]
    return proportion(values.astype(bool)) if metric in PROPORTIONS else bootstrap_mean(values)


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


def paired(scores, metric: str, a: str, b: str) -> Estimate:
    """Mean of a - b in ``metric`` over the images both were scored on (bootstrap over those images)."""
    return paired_difference(scores[a][metric], scores[b][metric])


def lower_than_all(scores, metric: str, method: str, others: list[str]) -> tuple[bool, list[Estimate]]:
    """The rule 'lower than each other': every paired difference method - other has its 95 % interval below 0."""
    diffs = [paired(scores, metric, method, other) for other in others]
    return all(d.below(0) for d in diffs), diffs


def higher_than_all(scores, metric: str, method: str, others: list[str]) -> tuple[bool, list[Estimate]]:
    """The rule 'higher than each other': every paired difference method - other has its 95 % interval above 0."""
    diffs = [paired(scores, metric, method, other) for other in others]
    return all(d.above(0) for d in diffs), diffs


def paper_number(method: str, metric: str) -> str:
    value = PAPERS.get(method, {}).get(metric)
    return f"{value[0]:g} ({value[1]})" if value else "not reported"


def faithfulness_claims(scores, dataset: str) -> list[Claim]:
    """Chattopadhay 2018 (Grad-CAM++ over Grad-CAM) and Wang 2020 (Score-CAM over both), decided by paired
    differences over the same images, beside the centre-point map (the trivial baseline)."""
    claims = []
    comparisons = [("Chattopadhay et al. 2018", "gradcam++", ["gradcam"]),
                   ("Wang et al. 2020", "scorecam", ["gradcam", "gradcam++"])]
    for paper, method, others in comparisons:
        if not {method, *others} <= set(scores):
            continue
        for metric, word, rule in (("average_drop", "lower Average Drop", lower_than_all),
                                   ("increase_in_confidence", "higher Increase in Confidence", higher_than_all)):
            holds, diffs = rule(scores, metric, method, others)
            scale, digits = (100, 1) if metric in PROPORTIONS else (1, 1)
            baseline = estimate(metric, scores[CENTRE_POINT][metric][np.isfinite(scores[method][metric])])
            claims.append(Claim(
                paper=paper, source="Tab. 1", claim=f"{method} has a {word} than {' and '.join(others)} [{dataset}]",
                paper_number="; ".join(f"{m}: {paper_number(m, metric)}" for m in [method, *others]),
                ours="; ".join(f"{method} - {o}: {d.format(digits, scale)}" for o, d in zip(others, diffs)),
                n=min(d.n for d in diffs),
                baseline=f"centre-point map: {baseline.format(digits, scale)}",
                rule=f"reproduced when the 95 % interval of every paired difference ({method} - other, same images) "
                     f"lies {'below' if rule is lower_than_all else 'above'} 0",
                verdict=decide(holds)))
    return claims


def beats_baseline(scores, method: str, metric: str, baselines: list[str]) -> tuple[bool, list[Estimate]]:
    """The rule 'localizes better than the trivial baselines': the paired difference of error indicators
    method - baseline has its 95 % interval below 0 for every baseline."""
    return lower_than_all(scores, metric, method, baselines)


def localization_claims(scores) -> list[Claim]:
    """Zhou 2016 (CAM, 20 % rule) and Selvaraju 2017 (Grad-CAM, 15 % rule): their boxes localize the object,
    i.e. they do better than boxes that ignore the image."""
    claims = []
    baselines = [FULL_IMAGE, CENTRE_BOX]
    for paper, source, method, metric in (("Zhou et al. 2016", "Tab. 2", "cam", "loc_err_20"),
                                          ("Selvaraju et al. 2017", "Tab. 1", "gradcam", "loc_err_15")):
        if method not in scores:
            continue
        holds, diffs = beats_baseline(scores, method, metric, baselines)
        ours = estimate(metric, scores[method][metric])
        claims.append(Claim(
            paper=paper, source=source, claim=f"{method}'s box localizes the object (error % at IoU < 0.5) [caltech101]",
            paper_number=f"{paper_number(method, metric)} (top-1: also counts wrong classes)",
            ours=f"{method}: {ours.format(1, 100)}; "
                 + "; ".join(f"{method} - {b.removeprefix('baseline: ')}: {d.format(1, 100)}" for b, d in zip(baselines, diffs)),
            n=ours.n,
            baseline="; ".join(f"{b}: {estimate(metric, scores[b][metric]).format(1, 100)}" for b in baselines),
            rule="reproduced when the 95 % interval of the paired error difference (method - baseline, same images) "
                 "lies below 0 for every baseline",
            verdict=decide(holds)))
    return claims


def with_paper_numbers(df: pd.DataFrame) -> pd.DataFrame:
    """Our columns, then for each metric that a paper reports for the method: its number and source."""
    df = df.copy()
    papers = [(m, v) for m in METRICS for v in [df["method"].map(lambda name: PAPERS.get(name, {}).get(m))]
              if m in df.columns and v.notna().any()]
    for metric, values in papers:
        df[f"paper_{metric}"] = values.map(lambda t: t[0] if isinstance(t, tuple) else np.nan)
    df["paper_source"] = df["method"].map(
        lambda name: "; ".join(sorted({s for _, s in PAPERS.get(name, {}).values()})) or "")
    return df


def main(cfg, out):
    ecfg = cfg.experiment
    if cfg.smoke:  # seconds, not minutes: few curve points, one Score-CAM image, 64 px (each pass ~9x cheaper)
        ecfg.curve_images, ecfg.curve_steps, ecfg.scorecam_images = min(ecfg.curve_images, 2), 4, 1
        cfg.model.input_size = min(cfg.model.input_size, 64)
    unknown = sorted(set(ecfg.methods) - set(ALL_METHODS))
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; available: {', '.join(ALL_METHODS)}")
    imagenet = images_from_config(cfg)  # data first: a missing dataset fails before anything is written
    caltech, caltech_boxes = caltech_with_boxes(cfg, ecfg.caltech_images)
    model = model_from_config(cfg)
    ecfg.layer = resolve_layers(model, ecfg.layer, "last_conv", "experiment.layer")
    if "cam" in ecfg.methods and not feeds_gap_head(model, ecfg.layer):
        raise UnsupportedModelError(
            f"cam (Zhou et al. 2016) needs a layer that only global average pooling and the linear head follow; "
            f"{cfg.model.name}'s {ecfg.layer} is not one: take cam out of experiment.methods, or use "
            f"model=resnet18 | efficientnet_lite0 (experiment=cam_gap trains GAP variants of alexnet, zfnet, vgg16)")
    ecfg.layercam_layers = resolve_layers(model, ecfg.layercam_layers, "layercam", "experiment.layercam_layers")
    frozen(model)
    size = cfg.model.input_size
    # the scores' many no-grad passes (AD / IC, deletion / insertion) run BatchNorm folded, NHWC: same outputs to rounding
    scorer = fold_batchnorm(model).to(memory_format=torch.channels_last)
    switches = has_switches(model, list(model.layers)[-1], (3, size, size))  # the deconvnet runs from the logits
    rng = np.random.default_rng(cfg.seed)
    pick = np.sort(rng.permutation(len(imagenet))[: ecfg.imagenet_images])
    sets = {"imagenet": (imagenet.tensors(pick, size), imagenet.labels[pick], None, imagenet.classes),
            "caltech101": (caltech.tensors(None, size), caltech.labels, caltech_boxes, caltech.classes)}
    metrics, claims = {}, []
    for name, (x, labels, boxes, classes) in sets.items():
        with torch.no_grad():
            logits = torch.cat([model(x[i:i + 32]) for i in range(0, len(x), 32)])
        targets = logits.argmax(1)
        scores, seconds, shown, predicted = score_dataset(model, scorer, x, targets, list(ecfg.methods), ecfg, boxes,
                                                          name)
        names = imagenet_classes()
        k = min(ecfg.figure_images, len(x), *(len(a) for a in shown.values()))  # Score-CAM may map fewer images
        captions = [f"{classes[labels[i]][:14]} -> {names[targets[i]].split(',')[0][:14]}" for i in range(k)]
        if not switches:  # the deconvnet's map ignores the image here: say so on the figure
            shown = {("deconvnet\n(fixed map:\nno switches)" if m == "deconvnet" else m): a for m, a in shown.items()}
        out.figure(method_grid(x[:k], shown, f"{cfg.model.name} layer {ecfg.layer}: maps of the top-1 class "
                               f"({name}{'; green: object box, red: 15% box' if boxes is not None else ''})",
                               captions, None if boxes is None else boxes[:k],
                               predicted if boxes is not None else None), f"{name}_grid")
        curve_n = {m: int(np.isfinite(s["deletion_auc"]).sum()) for m, s in scores.items() if "deletion_auc" in s}
        out.figure(curves_figure({m: s["curves"] for m, s in scores.items() if "curves" in s},
                                 f"{name}: deletion / insertion (RISE), {image_range(curve_n)} images"), f"{name}_curves")
        top1 = proportion(targets.numpy() == labels) if name == "imagenet" else None
        notes = notes_for(name, cfg, len(x), top1, curve_n, switches)
        out.table(with_paper_numbers(metrics_table(scores, seconds, switches, boxes is not None)), f"{name}_metrics",
                  title=f"CAM methods on {name} ({cfg.model.name}, {model.weights_source}, layer {ecfg.layer})", notes=notes)
        claims += faithfulness_claims(scores, name)
        if boxes is not None:
            claims += localization_claims(scores)
        for method, per_image in scores.items():
            for metric in METRICS:
                values = per_image.get(metric)
                if values is not None and np.isfinite(values).any():
                    e = estimate(metric, values)
                    metrics[f"{name}/{method}/{metric}"] = e.value * (100 if metric in PROPORTIONS else 1)
                    metrics[f"{name}/{method}/{metric}_n"] = e.n
    out.table(claims_frame(claims), "claims", title="CAM family: the papers' comparisons, decided on paired differences",
              notes=CLAIM_NOTES)
    return metrics


CLAIM_NOTES = """
Each comparison is the mean over the same images of a per-image difference (Average Drop in %, Increase in
Confidence as a 0/1 indicator in %, localization error as a 0/1 miss indicator in %), with a 95 % bootstrap
interval over those images; n is the number of images every method in the row was scored on (Score-CAM's
first images where Score-CAM takes part). The papers' numbers are on VGG-16 over ILSVRC images; ours are
EfficientNet-Lite0 on the images of this run: the rule compares orderings, not values. The baseline column is
the strongest trivial baseline scored by the same rule on the same images.
"""


def image_range(counts: dict[str, int]) -> str:
    """'64', or '1-64' where methods were scored on different numbers of images."""
    lo, hi = min(counts.values()), max(counts.values())
    return f"{lo}" if lo == hi else f"{lo}-{hi}"


def notes_for(name, cfg, n, top1, curve_n, switches) -> str:
    e = cfg.experiment
    scorecam_n = min(e.scorecam_images, n)
    common = (
        f"{n} images at {cfg.model.input_size} px; every map explains the model's top-1 class. Each cell: mean "
        "[95 % interval] (n = images scored): Wilson intervals for shares (localization error, pointing game, "
        "Increase in Confidence), bootstrap over images for means (Average Drop, deletion / insertion AUC). "
        + (f"Score-CAM (one forward pass per channel of {e.layer} per image) is scored on its first {scorecam_n} "
           "images. " if "scorecam" in e.methods else
           "Score-CAM is not in this run (one forward pass per channel per image; its maps equal pytorch-grad-cam's, "
           "see tests/test_cams.py). ")
        + f"Deletion / insertion on the first {image_range(curve_n)} images "
        f"({e.curve_steps} steps; deletion sets pixels to 0, insertion starts from an 11-px sigma-5 Gaussian blur, "
        "as RISE). Average Drop / Increase in Confidence use softmax probabilities on the image times its "
        "min-max-scaled map (Grad-CAM++ definitions). Input-space methods (saliency, deconvnet, guided backprop, "
        "guided Grad-CAM) are reduced to a map by max_c |.| (Simonyan). "
        + ("" if switches else
           f"{cfg.model.name} has no max-pooling, so the deconvnet's backward pass ignores the image (its rule "
           "rectifies the signal whatever the forward pass did, everything else is linear): its map is one fixed "
           "map per class (Mahendran & Vedaldi 2016), a baseline rather than an explanation; guided backprop "
           "(Springenberg et al. 2015) is the image-dependent variant. ")
        + f"layercam is LayerCAM at the last layer alone; layercam_fused fuses {', '.join(e.layercam_layers)} as "
        "its paper. Baseline row 'centre point': a map that is highest at the image centre and falls off with the "
        "distance from it, scored by every rule (pointing game: the centre point). The papers' numbers are for "
        "other networks (VGG-16, ResNet-50) on other ILSVRC images: compare orderings, not values."
    )
    if name == "imagenet":
        return (f"ImageNet validation subset (no boxes: no localization columns). The model's top-1 accuracy on "
                f"these images: {top1.format(1, 100)}. " + common)
    return ("Caltech-101 images with object boxes (24 categories, round-robin). The model is ImageNet-trained, "
            "so localization is class-agnostic (GT-known): error = % of images whose map's box (largest component "
            "above 15% / 20% of the maximum) has IoU < 0.5 with the object's box; the papers' top-1 error also counts "
            "wrong classes. Pointing game: the map's maximum within "
            f"{e.pointing_tolerance:g} px of the box (Zhang et al. 2016). Localization on the input-space maps is "
            "marked not comparable: the papers boxed those maps after a segmentation step (Simonyan et al. 2013: "
            "GraphCut), not with the raw threshold on a speckled map. Trivial baselines: 'full image' boxes the "
            "whole image; 'centre box' is a centred box whose width and height are the mean over the other images' "
            "object boxes of this run (leave-one-out, so an image's own box never informs its baseline). " + common)
