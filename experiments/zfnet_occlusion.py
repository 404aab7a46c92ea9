"""Zeiler & Fergus 2014 Fig. 7 (occlusion sensitivity) on a real ImageNet model, and two numbers behind it:
how much the correct class's probability drops at the most sensitive occluder position (ImageNet), and
how often that position lies on the object's box (Caltech-101 boxes, with a linear Caltech-101 head).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from cnnvis.config import ExperimentConfig
from cnnvis.data import (DatasetNotFoundError, caltech101_boxes, decode_to_cache, index_caltech101,
                         per_class_split)
from cnnvis.deconvnet import deconv_project
from cnnvis.hooks import activations
from cnnvis.mining import top_activations
from cnnvis.models import replace_head, resolve_layers
from cnnvis.occlusion import occlusion_map
from cnnvis.plotting.occlusion import occlusion_figure
from cnnvis.receptive_field import crop_patch, receptive_field
from cnnvis.runner import images_from_config, model_from_config

log = logging.getLogger(__name__)


@dataclass
class Config(ExperimentConfig):
    classes: list[int] = field(default_factory=lambda: [259, 479, 160])  # the paper's examples: Pomeranian, car wheel, Afghan hound
    layer: str | None = None  # None: the model's last conv layer (ZF's layer 5); its strongest map is panel (b)'s
    size: int = 48  # occluder side (px) for the figures; the paper gives none
    stride: int = 12
    batch_size: int = 16
    channels_last: bool = False
    incremental: bool = True  # exact incremental inference (cnnvis.incremental); false: one forward pass per position
    top_crops: int = 9  # panel (c): crops of the images that excite the map most
    mining_images: int | None = 400  # a seeded random sample searched for those crops (None: all)
    # the quantitative parts: a coarser grid, so 1,300 images x all positions take minutes
    quant_size: int = 56
    quant_stride: int = 56
    quant_images: int | None = None  # a seeded random sample of the ImageNet images to score (None: all 1,300)
    caltech: bool = True
    caltech_train_per_class: int = 5  # linear-head training images per class (all 101 classes)
    caltech_eval_per_class: int | None = None  # held-out boxed images occluded per boxed class (None: all)


def load_examples(cfg):
    """The configured dataset; ImageNet falls back to the bundled sample photos where it is absent."""
    try:
        return images_from_config(cfg)
    except DatasetNotFoundError as err:
        if cfg.dataset.name != "imagenet_val":
            raise
        log.warning("%s -- falling back to dataset=samples", err)
        fallback = copy.deepcopy(cfg)
        OmegaConf.update(fallback, "dataset.name", "samples")
        return images_from_config(fallback)


def pick_examples(images, classes) -> list[int]:
    """The first image of each wanted class; without any of them (other data), the first labelled images."""
    picks = [int(np.flatnonzero(images.labels == c)[0]) for c in classes if (images.labels == c).any()]
    if not picks:
        picks = np.flatnonzero(images.labels >= 0)[: len(classes)].tolist()
    return picks


def panel_c(model, images, x, layer, channel, top, mined, example, k, size):
    """Deconvnet projection of the map's strongest activation in this image, and crops of the other
    images whose strongest activations of that map are the largest (``top``: mined once over ``mined``)."""
    projection = deconv_project(model, x[None], layer, channel)[0]
    crops = []
    for rank in range(top.k):
        i, y, xx = top.location(channel, rank)
        i = int(mined[i])
        if i != example and len(crops) < k:
            crops.append(crop_patch(images.tensors([i], size)[0], receptive_field(model, layer, y, xx, size)))
    return projection, crops


def quantitative_drop(model, images, cfg, fill, rng) -> pd.DataFrame:
    """Per image: p(true) unoccluded, at the most sensitive position and at a random position."""
    e, size = cfg.experiment, cfg.model.input_size
    rows = []
    idx = np.sort(rng.permutation(np.flatnonzero(images.labels >= 0))[: e.quant_images])
    for i in tqdm(idx, desc="occlusion drop"):
        maps = occlusion_map(model, images.tensors([i], size)[0], target=int(images.labels[i]), size=e.quant_size,
                             stride=e.quant_stride, batch_size=e.batch_size, fill=fill, channels_last=e.channels_last,
                             incremental=e.incremental)
        r, c = maps.most_sensitive()
        rr, rc = rng.integers(maps.probability.shape[0]), rng.integers(maps.probability.shape[1])
        rows.append({"image": i, "p_clean": maps.clean_probability, "p_sensitive": float(maps.probability[r, c]),
                     "p_random": float(maps.probability[rr, rc]),
                     "top1_clean": maps.clean_top_class == maps.target,
                     "top1_sensitive": int(maps.top_class[r, c]) == maps.target,
                     "top1_random": int(maps.top_class[rr, rc]) == maps.target})
    return pd.DataFrame(rows)


@torch.no_grad()
def pooled_features(model, images, size, batch_size=32) -> np.ndarray:
    feats = []
    for start in tqdm(range(0, len(images), batch_size), desc="caltech features", leave=False):
        x = images.tensors(np.arange(start, min(start + batch_size, len(images))), size)
        feats.append(model.pool(model.features(model.normalize(x))))
    return torch.cat(feats).numpy()


def caltech_localization(model, cfg, rng):
    """Train a linear Caltech-101 head on frozen features (images never occluded later), then, for held-out
    images with boxes, whether the most sensitive occluder position's centre lies inside the box."""
    from sklearn.linear_model import LogisticRegression

    e, size = cfg.experiment, cfg.model.input_size
    index = index_caltech101(cfg.dataset.root)
    boxes = caltech101_boxes(index, cfg.dataset.root)
    boxed = np.array([p in boxes for p in index.paths])
    boxed_classes = np.unique(index.labels[boxed])
    n_train, n_eval = e.caltech_train_per_class, e.caltech_eval_per_class
    if cfg.smoke:
        boxed_classes, n_train, n_eval = boxed_classes[:3], 3, 2
    pool = np.flatnonzero(np.isin(index.labels, boxed_classes)) if cfg.smoke else np.arange(len(index.paths))
    train = pool[per_class_split(index.labels[pool], n_train, 0, seed=cfg.seed)[0]]
    held_out = boxed & ~np.isin(np.arange(len(index.paths)), train)  # every class keeps training images
    evaluate = np.concatenate([rng.permutation(np.flatnonzero(held_out & (index.labels == c)))[:n_eval]
                               for c in boxed_classes])
    decode = lambda sel: decode_to_cache(index.select(sel), size, "stretch", cfg.cache_dir, cfg.dataset.num_workers)
    train_set, eval_set = decode(train), decode(evaluate)

    head = LogisticRegression(max_iter=2000, C=1.0)
    head.fit(pooled_features(model, train_set, size), train_set.labels)
    caltech = copy.deepcopy(model)
    replace_head(caltech, len(index.classes))
    caltech.head.weight.data.zero_()
    caltech.head.bias.data.fill_(-1e4)  # classes without training images are never predicted
    caltech.head.weight.data[head.classes_] = torch.from_numpy(head.coef_).float()
    caltech.head.bias.data[head.classes_] = torch.from_numpy(head.intercept_).float()
    caltech.eval()

    fill = train_set.mean_color()
    rows = []
    for i in tqdm(range(len(eval_set)), desc="caltech occlusion"):
        label = int(eval_set.labels[i])
        x0, y0, x1, y1 = eval_set.box_in_image(i, boxes[eval_set.paths[i]], size)
        maps = occlusion_map(caltech, eval_set.tensors([i], size)[0], target=label, size=e.quant_size,
                             stride=e.quant_stride, batch_size=e.batch_size, fill=fill, channels_last=e.channels_last,
                             incremental=e.incremental)
        yc, xc = maps.centers
        inside = ((yc[:, None] >= y0) & (yc[:, None] < y1) & (xc[None] >= x0) & (xc[None] < x1))
        r, c = maps.most_sensitive()
        rows.append({"category": index.classes[label], "correct": maps.clean_top_class == label,
                     "sensitive_inside_box": bool(inside[r, c]), "chance_inside_box": float(inside.float().mean()),
                     "box_area_fraction": (x1 - x0) * (y1 - y0) / size ** 2})
    return pd.DataFrame(rows), len(train)


def mean_std(s) -> str:
    return f"{s.mean():.3f} ± {s.std():.3f}"


def main(cfg, out):
    images = load_examples(cfg)  # data first: a missing dataset fails before anything is written
    model = model_from_config(cfg)
    e, size = cfg.experiment, cfg.model.input_size
    e.layer = resolve_layers(model, e.layer, "last_conv", "experiment.layer")
    rng = np.random.default_rng(cfg.seed)
    fill = images.mean_color()
    stride = e.size if cfg.smoke else e.stride  # smoke: non-overlapping squares, seconds not minutes
    mined = np.sort(rng.permutation(len(images))[: e.mining_images])
    top = top_activations(model, images.subset(mined), [e.layer], k=e.top_crops + 1, size=size)[e.layer]

    examples = []
    for example in pick_examples(images, e.classes):
        x = images.tensors([example], size)[0]
        label = int(images.labels[example])
        maps = occlusion_map(model, x, layer=e.layer, target=label if label >= 0 else None, size=e.size,
                             stride=stride, batch_size=e.batch_size, fill=fill, channels_last=e.channels_last,
                             progress=True, incremental=e.incremental)
        projection, crops = panel_c(model, images, x, e.layer, maps.channel, top, mined, example,
                                    e.top_crops, size)
        name = images.classes[maps.target]
        fig = occlusion_figure(x, maps, images.classes, maps.target, fill, projection, crops,
                               title=f"{cfg.model.name}, {images.name} {images.paths[example].rsplit('/', 1)[-1]}")
        out.figure(fig, f"fig7_{name.replace(' ', '_').lower()}")

        act = activations(model, x[None], [e.layer])[e.layer][0, maps.channel]
        ay, ax = divmod(int(act.argmax()), act.shape[1])
        py, px = (ay + 0.5) * size / act.shape[0], (ax + 0.5) * size / act.shape[1]  # that unit's centre in pixels
        ar, ac = divmod(int(maps.activation.argmin()), maps.activation.shape[1])
        covers = maps.ys[ar] <= py < maps.ys[ar] + maps.size and maps.xs[ac] <= px < maps.xs[ac] + maps.size
        r, c = maps.most_sensitive()
        yc, xc = maps.centers
        others = [images.classes[k] for k in maps.top_class.unique().tolist() if k != maps.target]
        examples.append({
            "image": images.paths[example].rsplit("/", 1)[-1], "class": name, "map": f"{e.layer}:{maps.channel}",
            "p_clean": maps.clean_probability, "p_min": float(maps.probability.min()),
            "p_min_at_yx": f"({int(yc[r])}, {int(xc[c])})",
            "activation_min_over_clean": float(maps.activation.min()) / maps.clean_activation,
            "min_activation_covers_strongest_unit": bool(covers),
            "corr_activation_vs_probability": float(np.corrcoef(maps.activation.flatten(), maps.probability.flatten())[0, 1]),
            "positions_not_top1": float((maps.top_class != maps.target).float().mean()),
            "other_top_classes": ", ".join(others[:5]) + (" ..." if len(others) > 5 else ""),
        })
    ex = pd.DataFrame(examples)
    out.table(ex, "fig7_examples", title="Fig. 7 examples: what the occluder does",
              notes=f"{cfg.model.name} ({model.weights_source}) at {size} px; grey occluder = the dataset's mean colour, "
                    f"{e.size} px every {stride} px ({len(maps.ys)}x{len(maps.xs)} positions). Map = the channel of "
                    f"`{e.layer}` with the largest total activation on the unoccluded image. `min_activation_covers_"
                    f"strongest_unit`: the occluder position that lowers the map most covers the centre of the map's "
                    f"strongest unit. Command: `python run.py experiment=zfnet_occlusion`.")

    drop = quantitative_drop(model, images, cfg, fill, rng)
    quant = [{"measure": "p(true) drop, occluder at the most sensitive position",
              "ours": mean_std(drop.p_clean - drop.p_sensitive), "paper": "not reported (Fig. 7 shows it qualitatively)"},
             {"measure": "p(true) drop, occluder at a random position",
              "ours": mean_std(drop.p_clean - drop.p_random), "paper": "not reported"},
             {"measure": "top-1 accuracy: unoccluded / most sensitive / random",
              "ours": f"{drop.top1_clean.mean():.3f} / {drop.top1_sensitive.mean():.3f} / {drop.top1_random.mean():.3f}",
              "paper": "not reported"}]
    sample = "all labelled" if e.quant_images is None else "a seeded random sample of the"
    notes = (f"{len(drop)} {images.name} images ({sample} images), occluder {e.quant_size} px every {e.quant_stride} px; drop = p(true, "
             f"unoccluded) - p(true, occluded), mean ± std over images; the random position is drawn uniformly "
             f"from the same grid (seed {cfg.seed}).")
    metrics = {"drop_sensitive": float((drop.p_clean - drop.p_sensitive).mean()),
               "drop_random": float((drop.p_clean - drop.p_random).mean())}

    loc = None
    if e.caltech:
        try:
            loc, n_train = caltech_localization(model, cfg, rng)
        except DatasetNotFoundError as err:
            log.warning("Caltech-101 part skipped: %s", err)
    if loc is not None:
        quant += [{"measure": "Caltech-101 boxes: most sensitive position inside the object box",
                   "ours": f"{loc.sensitive_inside_box.mean():.3f}", "paper": "not reported"},
                  {"measure": "Caltech-101 boxes: chance (box-area-weighted share of positions inside the box)",
                   "ours": f"{loc.chance_inside_box.mean():.3f}", "paper": "not reported"},
                  {"measure": "Caltech-101 linear head accuracy on those held-out images",
                   "ours": f"{loc.correct.mean():.3f}", "paper": "not reported"}]
        notes += (f"\n\nCaltech-101: a logistic-regression head (scikit-learn) on frozen {cfg.model.name} pooled "
                  f"features of {n_train} images ({e.caltech_train_per_class} per class, 101 classes), none of them "
                  f"evaluated; {len(loc)} held-out images with object boxes ({loc.category.nunique()} categories) "
                  f"stretched to {size} px. Inside = the occluder's centre lies in the box; chance = the share of "
                  f"occluder positions whose centre lies in the box, averaged over images.")
        metrics.update(inside_box=float(loc.sensitive_inside_box.mean()), inside_box_chance=float(loc.chance_inside_box.mean()))
    out.table(pd.DataFrame(quant), "occlusion_quantitative", title="Occlusion: probability drop and localization",
              notes=notes)

    claims = claims_table(ex, drop, loc)
    out.table(claims, "claims", title="Zeiler & Fergus Sec. 4.2 claims vs what we observe",
              notes=f"{cfg.model.name} ({model.weights_source}) replaces ZFNet (no ImageNet-trained ZFNet ships "
                    f"offline); its last conv layer "
                    f"`{e.layer}` stands for ZFNet's layer 5.")
    metrics.update(examples=len(ex), occlusion_engine=maps.engine)  # which path computed the maps
    return metrics


def claims_table(ex, drop, loc) -> pd.DataFrame:
    d_sens, d_rand = drop.p_clean - drop.p_sensitive, drop.p_clean - drop.p_random
    rows = [
        ("The probability of the correct class drops significantly when the object is occluded",
         f"most sensitive position: drop {mean_std(d_sens)}; random position: {mean_std(d_rand)}",
         "yes" if d_sens.mean() > 2 * d_rand.mean() else "partly"),
        ("When the occluder covers the image region that the feature map's visualization shows, the map's "
         "activity drops strongly",
         f"lowest activation / unoccluded: {', '.join(f'{v:.2f}' for v in ex.activation_min_over_clean)}; that "
         f"position covers the map's strongest unit in {int(ex.min_activation_covers_strongest_unit.sum())} of {len(ex)}",
         "yes" if ex.min_activation_covers_strongest_unit.all() else "partly"),
        ("The classifier does not rely on the strongest layer-5 map alone (e.g. car wheel: text drives the map, "
         "the wheel drives the class)",
         f"correlation of maps (b) and (d): {', '.join(f'{v:.2f}' for v in ex.corr_activation_vs_probability)}",
         "yes (some example below 0.3)" if (ex.corr_activation_vs_probability < 0.3).any()
         else "no: map and classifier move together in every example"),
        ("Occluding the object changes the most probable class, often to another object in the scene",
         f"share of positions where the top class is not the true one: "
         f"{', '.join(f'{v:.2f}' for v in ex.positions_not_top1)}",
         "yes" if (ex.positions_not_top1 > 0).all() else "partly"),
    ]
    if loc is not None:
        rows.append(("The model localizes the object within the scene",
                     f"Caltech-101: most sensitive position inside the box {loc.sensitive_inside_box.mean():.2f} vs "
                     f"chance {loc.chance_inside_box.mean():.2f}",
                     "yes" if loc.sensitive_inside_box.mean() > loc.chance_inside_box.mean() else "no"))
    return pd.DataFrame(rows, columns=["paper's claim", "ours", "agrees"])
