"""Activation maximization: optimizing many units as one batch vs one unit at a time (same start, same steps).

The two paths do the same arithmetic per image, but batched convolutions round differently, and the normalized
gradient steps, clamps and percentile clipping amplify a 1e-7 difference over the steps. So the check is the
first step (the units of a batch must not interact: images equal to 1e-5); the final objective values of the two
paths are printed beside it.

    python benchmarks/activation_max.py [--units 8] [--steps 10] [--size 112] [--layer stage4]

Baseline: the same ``maximize`` called once per unit. Headline lines last, as ``name: value (target: ...)``.
"""

import argparse
import time

import torch

from cnnvis.activation_max import PRESETS, maximize
from cnnvis.objectives import channel
from cnnvis.models import build_model


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--layer", default="stage4")
    args = parser.parse_args()

    model = build_model("efficientnet_lite0", pretrained=True).eval()
    channels = list(range(args.units))
    kw = dict(size=args.size, steps=args.steps, reg=PRESETS["yosinski1"], seed=0)
    start = 0.5 + 0.02 * torch.randn(args.units, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    maximize(model, channel(args.layer, channels[:1]), **{**kw, "steps": 1})  # warm-up
    batched, t_batched = timed(lambda: maximize(model, channel(args.layer, channels), init=start, **kw))
    singles, t_loop = timed(lambda: [maximize(model, channel(args.layer, [c]), init=start[i:i + 1], **kw)
                                     for i, c in enumerate(channels)])
    values = torch.cat([s.values for s in singles])
    value_gap = float(((values - batched.values).abs() / values.abs().clamp_min(1e-6)).max())
    one_step = {**kw, "steps": 1}
    first = maximize(model, channel(args.layer, channels), init=start, **one_step).images
    first_gap = max(float((maximize(model, channel(args.layer, [c]), init=start[i:i + 1], **one_step).images[0]
                           - first[i]).abs().max()) for i, c in enumerate(channels))
    print(f"torch threads: {torch.get_num_threads()}; {args.units} units of {args.layer}, {args.steps} steps at "
          f"{args.size} px")
    print(f"one unit at a time: {t_loop:.2f} s; batched: {t_batched:.2f} s")
    print(f"max |image difference| after one step: {first_gap:.1e}; largest relative gap of the final objective "
          f"values: {value_gap:.1e}")
    print(f"image_steps_per_s_batched: {args.units * args.steps / t_batched:.1f} (target: higher than one at a time)")
    print(f"image_steps_per_s_one_at_a_time: {args.units * args.steps / t_loop:.1f} (target: baseline)")
    print(f"one_step_image_gap: {first_gap:.1e} (target: <= 1e-5, the units of a batch do not interact)")
    print(f"batched_speedup: {t_loop / t_batched:.2f}x (target: > 1)")


if __name__ == "__main__":
    main()
