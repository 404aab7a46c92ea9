"""Feature visualization (cnnvis.featurevis, preset lucid) against torch-lucent on the same model, units, steps
and image size: wall time per image, the activation each reaches, and the spectrum slope of the images.

Both use Lucid's recipe: a Fourier 1/f, colour-decorrelated, sigmoid image, Lucid's standard transforms, Adam
at lr 0.05. Lucent renders one unit per call (its ``render_vis``), hooks every module and runs the whole
network; ours renders all units as one batch and stops the forward pass at the objective's layer. Both final
images are scored by the same code (the channel's mean activation on the untransformed image). Lucent is a
benchmark dependency only (requirements.txt); without it the lucent lines are skipped with a message.

    python benchmarks/feature_vis.py [--units 6] [--steps 64] [--size 128] [--layer stage4]

Headline lines last, as ``name: value (target: ...)``.
"""

import argparse
import time

import numpy as np
import torch

from cnnvis import featurevis as fv
from cnnvis import objectives
from cnnvis.models import build_model
from cnnvis.stats import bootstrap_mean, paired_difference


def lucent_images(model, layer, channels, size, steps):
    """One ``render_vis`` per unit with Lucent's defaults (Fourier, decorrelated, standard transforms, Adam 0.05)."""
    from lucent.optvis import param, render

    images = []
    for c in channels:
        out = render.render_vis(model, f"features_{layer}:{c}", param_f=lambda: param.image(size), thresholds=(steps,),
                                preprocess=False, progress=False, show_image=False, fixed_image_size=size)
        images.append(torch.from_numpy(out[-1]).permute(0, 3, 1, 2))
    return torch.cat(images)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=6)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--layer", default="stage4")
    args = parser.parse_args()

    torch.manual_seed(0)
    np.random.seed(0)  # Lucent draws its transforms from NumPy's global generator
    model = build_model("efficientnet_lite0", pretrained=True).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    channels = list(range(0, 8 * args.units, 8))
    score = objectives.channel(args.layer, channels)

    def ours(preset):
        settings = fv.PRESETS[preset]
        return fv.render(model, score, settings.param(len(channels), args.size), settings.transforms,
                         steps=args.steps, lr=0.05).images

    ours("lucid")  # warm-up (first-call allocations)
    start = time.perf_counter()
    ours_images = ours("lucid")
    t_ours = time.perf_counter() - start
    pixel_images = ours("lucid_pixel")
    with torch.no_grad():
        ours_values = objectives.objective_values(model, ours_images, score).numpy()
    print(f"torch threads: {torch.get_num_threads()}; {len(channels)} channels of {args.layer} ({channels}), "
          f"{args.steps} steps at {args.size} px")
    print(f"ours: {t_ours:.2f} s for {len(channels)} images; activations {np.round(ours_values, 3).tolist()}")
    slopes = {"ours": fv.spectrum_slope(ours_images), "pixel": fv.spectrum_slope(pixel_images)}
    try:
        import lucent  # noqa: F401
    except ImportError:
        lucent = None
        print("torch-lucent is not installed (pip install -r requirements.txt): the lucent comparison is skipped")
    if lucent is not None:
        start = time.perf_counter()
        lucent_imgs = lucent_images(model, args.layer, channels, args.size, args.steps)
        t_lucent = time.perf_counter() - start
        with torch.no_grad():
            lucent_values = objectives.objective_values(model, lucent_imgs, score).numpy()
        slopes["lucent"] = fv.spectrum_slope(lucent_imgs)
        print(f"lucent: {t_lucent:.2f} s for {len(channels)} images; activations "
              f"{np.round(lucent_values, 3).tolist()}")
        print(f"activation ours - lucent, mean over the {len(channels)} units: "
              f"{paired_difference(ours_values, lucent_values).format()}")
    for name, s in slopes.items():
        print(f"spectrum slope {name}: mean {bootstrap_mean(s.numpy()).format()} over {len(s)} images")
    medians = ", ".join(f"{name} {s.median():.2f}" for name, s in slopes.items())
    print(f"spectrum_slope: {medians} (median per image; natural images ~ -2)")
    print(f"seconds_per_image_ours: {t_ours / len(channels):.2f} (target: no slower than lucent)")
    if lucent is not None:
        print(f"seconds_per_image_lucent: {t_lucent / len(channels):.2f} (target: baseline)")
        print(f"median_activation: ours {np.median(ours_values):.3f}, lucent {np.median(lucent_values):.3f} "
              f"(target: ours >= lucent)")
        print(f"speedup_vs_lucent: {t_lucent / t_ours:.2f}x (target: >= 1.5)")


if __name__ == "__main__":
    main()
