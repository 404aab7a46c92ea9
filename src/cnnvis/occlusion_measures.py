"""Zeiler & Fergus 2014's occlusion experiment (Sec. 4.2, Fig. 7) measured over many images: per-image measures of
the probability drop and the strongest feature map's response under occlusion, whether the most sensitive position
lies on the object (Caltech-101 boxes, a linear head on frozen features) against trivial baselines, the tables of
those measures with intervals, and the claims decided from them."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from cnnvis.claims import NOT_COMPARABLE, Claim, Evidence, Threshold, claim_seed, decided
from cnnvis.data import caltech101_boxes, decode_to_cache, index_caltech101, per_class_split
from cnnvis.deconvnet import deconv_project, switch_chain
from cnnvis.hooks import activations
from cnnvis.models import get_layer, layer_role, replace_head
from cnnvis.occlusion import occluder_positions, occlusion_map
from cnnvis.receptive_field import crop_patch, receptive_field
from cnnvis.run_record import RunRecord
from cnnvis.shards import ONE_PROCESS, ShardPlan
from cnnvis.rectifiers import rectifier_rule
from cnnvis.stats import bootstrap_mean, paired_difference, proportion

PAPER = "Zeiler & Fergus 2014"
LOW_CORRELATION = 0.3  # map (b) and map (d) "disagree" on an image when they correlate below this
DISAGREEMENT_SHARE = 0.05  # ... and the disagreement is a regular event, not a one-off, above this share of images


def guided_project_units(model, images, layer, channel, locations) -> torch.Tensor:
    """Guided backpropagation (Springenberg et al. 2015) of one unit per image, (channel, y, x) at
    ``locations[k]``, to pixel space: on a network without max-pool switches the deconvnet is one fixed linear
    map whatever the image (Mahendran & Vedaldi 2016), guided backprop still depends on the image.

    Where ``layer`` ends in a rectifier the signal starts at its input: a unit saturated at ReLU6's top passes
    no gradient through its own rectifier, and the strongest units are the saturated ones."""
    module = get_layer(model, layer)
    last = list(module.children())[-1] if len(list(module.children())) else module
    start = last if isinstance(last, (nn.ReLU, nn.ReLU6, nn.Hardtanh)) else module
    store = {}
    handle = start.register_forward_hook(lambda m, inputs, output: store.update(
        act=inputs[0] if start is not module else output))
    x = images.detach().clone().requires_grad_(True)
    try:
        with torch.enable_grad(), rectifier_rule("guided"):
            model(x)
            act = store["act"]
            seed = torch.zeros_like(act)
            rows, (ys, xs) = torch.arange(len(x)), torch.as_tensor(locations).T
            seed[rows, channel, ys, xs] = 1.0
            (grad,) = torch.autograd.grad(act, x, seed)
    finally:
        handle.remove()
    return grad


def projection_method(model, layer) -> str:
    """The paper's deconvnet where the network has max-pool switches up to ``layer``, else guided backprop."""
    return "deconvnet" if switch_chain(model, layer) is not None else "guided backprop"


def panel_c(model, images, x, layer, channel, top, mined, example, k, size, method):
    """The map's strongest activation in this image projected to pixels, and the projections of its strongest
    activations in ``k`` other images (``top``: mined once over ``mined``), each cut to its receptive field."""
    act = activations(model, x[None], [layer])[layer][0, channel]
    picks = [(i, y, xx) for i, y, xx in (top.location(channel, r) for r in range(top.k)) if int(mined[i]) != example]
    picks = picks[:k]
    batch = torch.cat([x[None], images.tensors([int(mined[i]) for i, _, _ in picks], size)])
    locations = [divmod(int(act.argmax()), act.shape[1])] + [(y, xx) for _, y, xx in picks]
    project = deconv_project if method == "deconvnet" else guided_project_units
    projections = project(model, batch, layer, channel, locations).detach()
    others = [crop_patch(p, receptive_field(model, layer, y, xx, size))
              for p, (y, xx) in zip(projections[1:], locations[1:])]
    return projections[0], others


def strongest_unit_centre(model, x, layer, channel, size) -> tuple[float, float]:
    """Pixel (y, x) of the centre of ``channel``'s strongest unit on the unoccluded image."""
    act = activations(model, x[None], [layer])[layer][0, channel]
    ay, ax = divmod(int(act.argmax()), act.shape[1])
    return (ay + 0.5) * size / act.shape[0], (ax + 0.5) * size / act.shape[1]


def imagenet_measures(maps, unit_yx, random_rc) -> dict:
    """Per image, from one occlusion pass with the layer's strongest map recorded: the class probability at
    the most sensitive / a random (``random_rc``: row, column) / every position, and the map's response when the
    occluder covers its strongest unit vs when it does not."""
    r, c = maps.most_sensitive()
    rr, rc = random_rc
    py, px = unit_yx
    covers = (((maps.ys <= py) & (py < maps.ys + maps.size))[:, None]
              & ((maps.xs <= px) & (px < maps.xs + maps.size))[None])
    relative = maps.activation / maps.clean_activation
    act, prob = maps.activation.flatten().numpy(), maps.probability.flatten().numpy()
    constant = act.std() == 0 or prob.std() == 0  # a correlation is undefined then
    return {"p_clean": maps.clean_probability, "p_sensitive": float(maps.probability[r, c]),
            "p_random": float(maps.probability[rr, rc]), "p_mean": float(maps.probability.mean()),
            "top1_clean": maps.clean_top_class == maps.target,
            "top1_sensitive": int(maps.top_class[r, c]) == maps.target,
            "top1_random": int(maps.top_class[rr, rc]) == maps.target,
            "map_drop_covering": float(1 - relative[covers].mean()) if covers.any() else np.nan,
            "map_drop_elsewhere": float(1 - relative[~covers].mean()) if (~covers).any() else np.nan,
            "corr_map_vs_class": np.nan if constant else float(np.corrcoef(act, prob)[0, 1])}


def quantitative_drop(model, images, layer, input_size, n_images, fill, rng, plan: ShardPlan = ONE_PROCESS,
                      analysis: str = "drop", **occluder) -> pd.DataFrame | None:
    """``imagenet_measures`` for every labelled image (or a seeded sample of ``n_images``) at ``input_size`` px;
    ``occluder``: occlusion_map's size, stride, batch_size, channels_last, incremental. ``plan``: the shards of
    the images this process scores (``analysis`` names them) and whether it merges them (None when it does not)."""
    idx = np.sort(rng.permutation(np.flatnonzero(images.labels >= 0))[:n_images])
    n_rows, n_cols = (len(p) for p in occluder_positions(input_size, input_size, occluder["size"], occluder["stride"]))
    # every image's random position, drawn up front in image order: any split of the images draws the same
    random_rc = [(rng.integers(n_rows), rng.integers(n_cols)) for _ in idx]

    def scored(positions) -> pd.DataFrame:
        rows = []
        for p in tqdm(positions, desc="occlusion drop"):
            x = images.tensors([idx[p]], input_size)[0]
            maps = occlusion_map(model, x, layer=layer, target=int(images.labels[idx[p]]), fill=fill, **occluder)
            unit = strongest_unit_centre(model, x, layer, maps.channel, input_size)
            rows.append({"image": idx[p], **imagenet_measures(maps, unit, random_rc[p])})
        return pd.DataFrame(rows)

    return plan.rows(analysis, len(idx), scored)


def head_inputs(model, images, size, batch_size=32) -> np.ndarray:
    """The vectors the model's last linear layer reads (its ``late`` layer: pooled features or fc7), per image."""
    late = layer_role(model, "late")
    feats = []
    for start in tqdm(range(0, len(images), batch_size), desc="caltech features", leave=False):
        x = images.tensors(np.arange(start, min(start + batch_size, len(images))), size)
        feats.append(activations(model, x, [late])[late])
    return torch.cat(feats).numpy()


def centre_inside(ys, xs, square, box) -> torch.Tensor:
    """(rows, cols): whether the centre of the ``square`` at (ys[i], xs[j]) lies in the (x0, y0, x1, y1) box."""
    x0, y0, x1, y1 = box
    yc, xc = ys + square / 2, xs + square / 2
    return ((yc >= y0) & (yc < y1))[:, None] & ((xc >= x0) & (xc < x1))[None]


def box_overlap(ys, xs, square, box) -> torch.Tensor:
    """(rows, cols): the share of the ``square`` at (ys[i], xs[j]) that lies in the (x0, y0, x1, y1) box."""
    x0, y0, x1, y1 = box
    oy = ((ys + square).clamp(max=y1) - ys.clamp(min=y0)).clamp(min=0)
    ox = ((xs + square).clamp(max=x1) - xs.clamp(min=x0)).clamp(min=0)
    return oy[:, None].float() * ox[None].float() / square ** 2


def fitted_prior_position(boxes, size, square, stride) -> tuple[int, int]:
    """The occluder position whose centre lies in the most of ``boxes`` (other images than those scored):
    a centre-biased prior that never sees the image."""
    ys, xs = occluder_positions(size, size, square, stride)
    hits = sum(centre_inside(ys, xs, square, b).float() for b in boxes)
    return divmod(int(hits.argmax()), len(xs))


def caltech_measures(maps, box, size, prior_rc, on_box, off_box) -> dict:
    """Per boxed image: is the most sensitive position on the object, and do the trivial baselines land there
    (the image centre, a uniform position = the box-area prior, the fitted prior position); the drop and the
    share of positions with another top class, occluder on the object vs off it (NaN where no position is); the
    share of the image's total drop at positions inside the box (NaN where nothing lowers p)."""
    inside = centre_inside(maps.ys, maps.xs, maps.size, box)
    overlap = box_overlap(maps.ys, maps.xs, maps.size, box)
    on, off = overlap >= on_box, overlap <= off_box
    drop = maps.clean_probability - maps.probability
    lowered = drop.clamp(min=0)
    changed = (maps.top_class != maps.target).float()
    x0, y0, x1, y1 = box
    r, c = maps.most_sensitive()
    return {"correct": maps.clean_top_class == maps.target, "sensitive_inside_box": bool(inside[r, c]),
            "centre_inside_box": bool(y0 <= size / 2 < y1 and x0 <= size / 2 < x1),
            "uniform_inside_box": float(inside.float().mean()), "prior_inside_box": bool(inside[prior_rc]),
            "drop_mass_inside_box": float(lowered[inside].sum() / lowered.sum()) if lowered.sum() > 0 else np.nan,
            "drop_on_box": float(drop[on].mean()) if on.any() else np.nan,
            "drop_off_box": float(drop[off].mean()) if off.any() else np.nan,
            "changed_on_box": float(changed[on].mean()) if on.any() else np.nan,
            "changed_off_box": float(changed[off].mean()) if off.any() else np.nan,
            "box_area_fraction": (x1 - x0) * (y1 - y0) / size ** 2}


def caltech_localization(model, root, input_size, cache_dir, num_workers, n_train, n_eval, on_box, off_box, seed, rng,
                         n_classes=None, record: RunRecord | None = None, plan: ShardPlan = ONE_PROCESS,
                         analysis: str = "caltech", **occluder):
    """Train a linear Caltech-101 head on frozen features of ``n_train`` images per class (never occluded later),
    fit the prior position on the training images' boxes, then ``caltech_measures`` for up to ``n_eval`` held-out
    images with boxes per boxed class. ``n_classes``: only the first that many boxed classes, training images
    included (None: every class); ``occluder``: occlusion_map's size, stride, batch_size, channels_last,
    incremental. Returns the measures, the number of training images and of training boxes. The images decoded are
    added to ``record`` when one is given. ``plan``: the shards of the held-out images this process occludes
    (``analysis`` names them); the measures are None where it does not merge them."""
    from sklearn.linear_model import LogisticRegression

    index = index_caltech101(root)
    boxes = caltech101_boxes(index, root)
    boxed = np.array([p in boxes for p in index.paths])
    boxed_classes = np.unique(index.labels[boxed])
    pool = np.arange(len(index.paths))
    if n_classes is not None:
        boxed_classes = boxed_classes[:n_classes]
        pool = np.flatnonzero(np.isin(index.labels, boxed_classes))
    train = pool[per_class_split(index.labels[pool], n_train, 0, seed=seed)[0]]
    held_out = boxed & ~np.isin(np.arange(len(index.paths)), train)  # every class keeps training images
    evaluate = np.concatenate([rng.permutation(np.flatnonzero(held_out & (index.labels == c)))[:n_eval]
                               for c in boxed_classes])
    decode = lambda sel: decode_to_cache(index.select(sel), input_size, "stretch", cache_dir, num_workers, record)
    train_set, eval_set = decode(train), decode(evaluate)

    head = LogisticRegression(max_iter=2000, C=1.0)
    head.fit(head_inputs(model, train_set, input_size), train_set.labels)
    caltech = copy.deepcopy(model)
    replace_head(caltech, len(index.classes))
    caltech.head.weight.data.zero_()
    caltech.head.bias.data.fill_(-1e4)  # classes without training images are never predicted
    caltech.head.weight.data[head.classes_] = torch.from_numpy(head.coef_).float()
    caltech.head.bias.data[head.classes_] = torch.from_numpy(head.intercept_).float()
    caltech.eval()

    train_boxes = [train_set.box_in_image(i, boxes[p], input_size) for i, p in enumerate(train_set.paths) if p in boxes]
    prior_rc = fitted_prior_position(train_boxes, input_size, occluder["size"], occluder["stride"])
    fill = train_set.mean_color()

    def measured(positions) -> pd.DataFrame:
        rows = []
        for i in tqdm(positions, desc="caltech occlusion"):
            label = int(eval_set.labels[i])
            box = eval_set.box_in_image(i, boxes[eval_set.paths[i]], input_size)
            maps = occlusion_map(caltech, eval_set.tensors([i], input_size)[0], target=label, fill=fill, **occluder)
            rows.append({"category": index.classes[label],
                         **caltech_measures(maps, box, input_size, prior_rc, on_box, off_box)})
        return pd.DataFrame(rows)

    return plan.rows(analysis, len(eval_set), measured), len(train), len(train_boxes)


def examples_table(model, images, maps_by_example, layer, size) -> pd.DataFrame:
    """Fig. 7's examples in numbers: illustrations, no verdicts."""
    rows = []
    for example, x, maps in maps_by_example:
        unit = strongest_unit_centre(model, x, layer, maps.channel, size)
        ar, ac = divmod(int(maps.activation.argmin()), maps.activation.shape[1])
        covers = maps.ys[ar] <= unit[0] < maps.ys[ar] + maps.size and maps.xs[ac] <= unit[1] < maps.xs[ac] + maps.size
        r, c = maps.most_sensitive()
        yc, xc = maps.centers
        others = [images.classes[k] for k in maps.top_class.unique().tolist() if k != maps.target]
        rows.append({
            "image": images.paths[example].rsplit("/", 1)[-1], "class": images.classes[maps.target],
            "map": f"{layer}:{maps.channel}", "p_clean": maps.clean_probability,
            "p_min": float(maps.probability.min()), "p_min_at_yx": f"({int(yc[r])}, {int(xc[c])})",
            "activation_min_over_clean": float(maps.activation.min()) / maps.clean_activation,
            "min_activation_covers_strongest_unit": bool(covers),
            "corr_activation_vs_probability": float(np.corrcoef(maps.activation.flatten(),
                                                                maps.probability.flatten())[0, 1]),
            "positions_not_top1": float((maps.top_class != maps.target).float().mean()),
            "other_top_classes": ", ".join(others[:5]) + (" ..." if len(others) > 5 else ""),
        })
    return pd.DataFrame(rows)


def drop_table(drop, dataset: str) -> list[dict]:
    """The probability drop over the scored images of ``dataset`` (its name in each row), each with n and a 95 %
    interval; no verdict."""
    boot = lambda v: fmt(bootstrap_mean, v)
    return [
        {"measure": f"{dataset}: p(true) drop, occluder at the most sensitive position",
         "ours": boot(drop.p_clean - drop.p_sensitive), "paper": "not reported (Fig. 7 shows it qualitatively)"},
        {"measure": f"{dataset}: p(true) drop, occluder at a random position",
         "ours": boot(drop.p_clean - drop.p_random), "paper": "not reported"},
        {"measure": f"{dataset}: p(true) drop, mean over all occluder positions",
         "ours": boot(drop.p_clean - drop.p_mean), "paper": "not reported"},
        {"measure": f"{dataset}: top-1 accuracy unoccluded", "ours": fmt(rate, drop.top1_clean),
         "paper": "not reported"},
        {"measure": f"{dataset}: top-1 accuracy, occluder at the most sensitive position",
         "ours": fmt(rate, drop.top1_sensitive), "paper": "not reported"},
        {"measure": f"{dataset}: top-1 accuracy, occluder at a random position",
         "ours": fmt(rate, drop.top1_random), "paper": "not reported"},
        {"measure": f"{dataset}: relative drop of the strongest map, occluder covering its strongest unit",
         "ours": boot(drop.map_drop_covering), "paper": "not reported"},
        {"measure": f"{dataset}: relative drop of the strongest map, occluder elsewhere",
         "ours": boot(drop.map_drop_elsewhere), "paper": "not reported"},
    ]


def caltech_table(loc) -> list[dict]:
    boot = lambda v: fmt(bootstrap_mean, v)
    return [
        {"measure": "Caltech-101: most sensitive position inside the object box",
         "ours": fmt(rate, loc.sensitive_inside_box), "paper": "not reported"},
        {"measure": "Caltech-101 baseline: image centre inside the box", "ours": fmt(rate, loc.centre_inside_box),
         "paper": "-"},
        {"measure": "Caltech-101 baseline: uniform position inside the box (box-area prior)",
         "ours": boot(loc.uniform_inside_box), "paper": "-"},
        {"measure": "Caltech-101 baseline: prior position fitted on the training boxes, inside the box",
         "ours": fmt(rate, loc.prior_inside_box), "paper": "-"},
        {"measure": "Caltech-101: share of the image's p(true) drop at positions inside the box, minus the share of "
                    "positions inside it (every image, no exclusions)",
         "ours": fmt(paired_difference, loc.drop_mass_inside_box, loc.uniform_inside_box), "paper": "not reported"},
        {"measure": "Caltech-101: p(true) drop, occluder on the object", "ours": boot(loc.drop_on_box),
         "paper": "not reported"},
        {"measure": "Caltech-101: p(true) drop, occluder off the object", "ours": boot(loc.drop_off_box),
         "paper": "not reported"},
        {"measure": "Caltech-101 linear head accuracy on those held-out images", "ours": fmt(rate, loc.correct),
         "paper": "not reported"},
    ]


def rate(values):
    """A share of yes/no per image gets a Wilson interval, a per-image mean a bootstrap one."""
    values = pd.Series(values).dropna()
    return proportion(values) if values.dtype == bool else bootstrap_mean(values)


def fmt(estimate_of, *columns) -> str:
    """``estimate_of(*columns).format()``, or "n = 0" where no image has a value."""
    if not np.isfinite(np.asarray(pd.concat(columns, axis=1), dtype=float)).all(1).any():
        return "no image (n = 0)"
    return estimate_of(*columns).format()


def claim(source, text, ours, n, baseline, rule, evidence) -> Claim:
    return decided(PAPER, source, text, "qualitative (Fig. 7)", ours, n, baseline, rule, evidence)


def absent(source, text, why) -> Claim:
    return Claim(PAPER, source, text, "qualitative (Fig. 7)", f"not measured: {why}", 0, "-", "-", NOT_COMPARABLE, why)


LOCALIZES = "The model localizes the object within the scene: its most sensitive occluder position lies on the object"
DROPS = "The probability of the correct class drops significantly when the object is occluded"
MAP_DROPS = ("When the occluder covers the image region that the feature map's visualization shows, the map's "
             "activity drops strongly")
NOT_ALONE = ("The classifier does not rely on the strongest layer-5 map alone (car wheel: text drives the map, the "
             "wheel drives the class)")
CHANGES = "Occluding the object changes the most probable class"
OTHER_OBJECT = "... often to another object in the scene"
ABOVE_ZERO = Threshold(0.0)


def paired_above_zero(source, text, a, b, k: int = 0) -> Evidence:
    """The per-image paired difference a - b, decided above 0 (bootstrap seed: the claim's, plus ``k``)."""
    return Evidence("paired_difference", (np.asarray(a, dtype=float), np.asarray(b, dtype=float)), ABOVE_ZERO,
                    claim_seed(source, text) + k)


def localization_claim(loc) -> Claim:
    """Most sensitive position in the box vs the centre, the box-area prior and the fitted prior, paired per image."""
    source = "Sec. 4.2, Fig. 7"
    baselines = {"image centre": loc.centre_inside_box, "box-area prior (uniform position)": loc.uniform_inside_box,
                 "prior position fitted on training boxes": loc.prior_inside_box}
    means = {name: rate(v) for name, v in baselines.items()}
    evidence = [paired_above_zero(source, LOCALIZES, loc.sensitive_inside_box, v, k)
                for k, v in enumerate(baselines.values())]
    strongest = max(means, key=lambda name: means[name].value)
    diff = evidence[list(baselines).index(strongest)].estimate()
    return claim(source, LOCALIZES,
                 f"inside the box {rate(loc.sensitive_inside_box).format()}; minus {strongest}: {diff.format()}",
                 len(loc), "; ".join(f"{name} {est.format()}" for name, est in means.items()),
                 "against every baseline: " + ABOVE_ZERO.text("the per-image paired difference inside(model) - "
                                                              "inside(baseline)"), evidence)


def paired_on_off(frame, on, off) -> tuple[pd.DataFrame, int]:
    """The images with a value both on and off the object, and how many were excluded for lacking one."""
    kept = frame[np.isfinite(frame[on]) & np.isfinite(frame[off])]
    return kept, len(frame) - len(kept)


def object_drop_claim(loc, on_box, off_box) -> Claim:
    source = "Sec. 4.2"
    kept, excluded = paired_on_off(loc, "drop_on_box", "drop_off_box")
    if kept.empty:
        return absent(source, DROPS, f"no image has occluder positions both on and off its box ({excluded} tried)")
    evidence = paired_above_zero(source, DROPS, kept.drop_on_box, kept.drop_off_box)
    return claim(source, DROPS,
                 f"drop on the object {bootstrap_mean(kept.drop_on_box).format()}; on - off "
                 f"{evidence.estimate().format()}; {excluded} of {len(loc)} images excluded (no position on or off "
                 f"the box)", len(kept), f"occluder off the object: drop {bootstrap_mean(kept.drop_off_box).format()}",
                 ABOVE_ZERO.text(f"the per-image paired difference drop(occluder on the box: >= {on_box:.0%} of its "
                                 f"square inside) - drop(off it: <= {off_box:.0%})"), [evidence])


def map_drop_claim(drop) -> Claim:
    source = "Sec. 4.2, Fig. 7 (b)"
    kept, excluded = paired_on_off(drop, "map_drop_covering", "map_drop_elsewhere")
    if kept.empty:
        return absent(source, MAP_DROPS, f"no image with positions covering and missing the unit ({excluded} tried)")
    evidence = paired_above_zero(source, MAP_DROPS, kept.map_drop_covering, kept.map_drop_elsewhere)
    return claim(source, MAP_DROPS,
                 f"relative drop of the map covering its strongest unit "
                 f"{bootstrap_mean(kept.map_drop_covering).format()}; covering - elsewhere "
                 f"{evidence.estimate().format()}" + (f"; {excluded} images excluded" if excluded else ""),
                 len(kept), f"occluder elsewhere: {bootstrap_mean(kept.map_drop_elsewhere).format()}",
                 ABOVE_ZERO.text("the per-image paired difference drop(occluder covers the centre of the map's "
                                 "strongest unit) - drop(occluder elsewhere), drops relative to the unoccluded map "
                                 "total"), [evidence])


def map_not_alone_claim(drop) -> Claim:
    source = "Sec. 4.2, Fig. 7 (b, d)"
    corr = drop.corr_map_vs_class.dropna()
    if corr.empty:
        return absent(source, NOT_ALONE, f"no image where both the map (b) and p(true) (d) vary over the occluder "
                                         f"positions ({len(drop)} tried; a correlation needs both)")
    rule = Threshold(DISAGREEMENT_SHARE)
    evidence = Evidence("proportion", ((corr < LOW_CORRELATION).to_numpy(),), rule, claim_seed(source, NOT_ALONE))
    return claim(source, NOT_ALONE,
                 f"share of images whose maps (b) and (d) correlate below {LOW_CORRELATION}: "
                 f"{evidence.estimate().format()}; median correlation {corr.median():.2f}", len(corr),
                 "a classifier reading only this map: maps (b) and (d) move together on every image",
                 rule.text(f"the share of images with correlation below {LOW_CORRELATION} (Wilson)"), [evidence])


def top_class_claim(loc, on_box, off_box) -> Claim:
    source = "Sec. 4.2, Fig. 7 (e)"
    kept, excluded = paired_on_off(loc[loc.correct.astype(bool)], "changed_on_box", "changed_off_box")
    if kept.empty:
        return absent(source, CHANGES, "no correctly classified image with positions on and off its box")
    evidence = paired_above_zero(source, CHANGES, kept.changed_on_box, kept.changed_off_box)
    return claim(source, CHANGES,
                 f"share of on-object positions with another top class {bootstrap_mean(kept.changed_on_box).format()}; "
                 f"on - off {evidence.estimate().format()}; {excluded} correctly classified images excluded (no "
                 f"position on or off the box)", len(kept),
                 f"occluder off the object: {bootstrap_mean(kept.changed_off_box).format()}",
                 ABOVE_ZERO.text(f"the per-image paired difference, over correctly classified images, share(top class "
                                 f"changes, occluder on the box: >= {on_box:.0%}) - share(off it: <= {off_box:.0%})"),
                 [evidence])


def other_object_claim(loc) -> Claim:
    on = loc.changed_on_box[loc.correct.astype(bool)].dropna()
    ours = (f"images where some on-object occluder changes the top class: {proportion(on > 0).format()}"
            if len(on) else "no correctly classified image with a position on its box")
    why = ("not testable: each image carries one label, so whether the new top class is another object in the scene "
           "is unknown")
    return Claim(PAPER, "Sec. 4.2, Fig. 7 (e)", OTHER_OBJECT, "qualitative (Fig. 7)", ours, len(on), "-", why,
                 NOT_COMPARABLE, why)


def claims_table(drop, loc, on_box, off_box) -> list[Claim]:
    """The Sec. 4.2 claims: ``map_claims(drop)`` then ``box_claims(loc, on_box, off_box)``."""
    return map_claims(drop) + box_claims(loc, on_box, off_box)


def map_claims(drop) -> list[Claim]:
    """The feature map's two claims, from the ImageNet measures (``drop``; empty: not comparable)."""
    if drop.empty:
        return [absent("Sec. 4.2, Fig. 7 (b)", MAP_DROPS, "no labelled images"),
                absent("Sec. 4.2, Fig. 7 (b, d)", NOT_ALONE, "no labelled images")]
    return [map_drop_claim(drop), map_not_alone_claim(drop)]


def box_claims(loc, on_box, off_box) -> list[Claim]:
    """The four claims of the boxed Caltech-101 images (``loc``; None or empty: not comparable, the part did not
    run)."""
    if loc is None or loc.empty:
        no_boxes = "no boxed Caltech-101 images (the Caltech-101 part did not run)"
        return [absent("Sec. 4.2, Fig. 7", LOCALIZES, no_boxes), absent("Sec. 4.2", DROPS, no_boxes),
                absent("Sec. 4.2, Fig. 7 (e)", CHANGES, no_boxes),
                absent("Sec. 4.2, Fig. 7 (e)", OTHER_OBJECT, no_boxes)]
    return [localization_claim(loc), object_drop_claim(loc, on_box, off_box), top_class_claim(loc, on_box, off_box),
            other_object_claim(loc)]
