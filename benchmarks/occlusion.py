"""Speed of the batched occlusion map (Zeiler & Fergus Fig. 7) on EfficientNet-Lite0, against
(i) the plain forward pass of the same number of images at the best batch size and memory format, and
(ii) Captum's ``Occlusion`` with the same window and stride, at perturbations_per_eval=1 and at its best.

    python benchmarks/occlusion.py [--size 48 --stride 32 --threads N] [--incremental-args "--models zfnet"]

Then, unless --no-incremental, the incremental engine against the full-forward one on zfnet, alexnet,
resnet18 and efficientnet_lite0 (benchmarks/occlusion_incremental.py, wall clock and multiply-adds).

Every ratio is measured in this run; the headline lines come last.
"""

from __future__ import annotations

import argparse
import time

import torch

from cnnvis.models import IMAGENET_MEAN, build_model
from cnnvis.occlusion import occlusion_map, occluder_positions


def seconds(fn, repeats):
    """Best wall time of ``repeats`` calls, after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def sample_image(size):
    import skimage.data

    x = torch.from_numpy(skimage.data.chelsea()).permute(2, 0, 1)[None].float() / 255
    return torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--stride", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 16, 37])
    parser.add_argument("--incremental-args", default="",
                        help="options of the incremental part (see benchmarks/occlusion_incremental.py), quoted")
    parser.add_argument("--no-incremental", dest="incremental", action="store_false",
                        help="skip the incremental-vs-full-forward part")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model("efficientnet_lite0", pretrained=True).eval()
    image = sample_image(224)
    fill = torch.tensor(IMAGENET_MEAN)
    ys, xs = occluder_positions(224, 224, args.size, args.stride)
    n = len(ys) * len(xs) + 1  # the occluded copies and the unoccluded image
    print(f"efficientnet_lite0, 224 px, occluder {args.size}/{args.stride}: {n - 1} positions; "
          f"{torch.get_num_threads()} threads")

    forward = {}
    for channels_last in (False, True):
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        m = model.to(memory_format=fmt)
        for bs in args.batch_sizes:
            batch = image[None].repeat(bs, 1, 1, 1).contiguous(memory_format=fmt)
            chunks = [batch] * (n // bs) + ([batch[: n % bs]] if n % bs else [])

            def run():
                with torch.no_grad():
                    for c in chunks:
                        m(c)

            forward[(bs, channels_last)] = seconds(run, args.repeats)
            print(f"forward {n} images, batch {bs:3d}, {'NHWC' if channels_last else 'NCHW'}: "
                  f"{forward[(bs, channels_last)] * 1000 / n:7.2f} ms/image", flush=True)
    best_fwd_key = min(forward, key=forward.get)
    best_fwd = forward[best_fwd_key]
    model.to(memory_format=torch.channels_last if best_fwd_key[1] else torch.contiguous_format)

    ours = {}
    for bs in args.batch_sizes:
        for channels_last in (False, True):
            model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
            ours[(bs, channels_last)] = seconds(lambda: occlusion_map(
                model, image, layer="head", size=args.size, stride=args.stride, batch_size=bs, fill=fill,
                channels_last=channels_last), args.repeats)
            print(f"ours (activation + probability + top class), batch {bs:3d}, "
                  f"{'NHWC' if channels_last else 'NCHW'}: {ours[(bs, channels_last)] * 1000 / n:7.2f} ms/image", flush=True)
    best_ours_key = min(ours, key=ours.get)
    best_ours = ours[best_ours_key]

    from captum.attr import Occlusion

    model.to(memory_format=torch.channels_last if best_fwd_key[1] else torch.contiguous_format)  # Captum gets the best too
    probabilities = lambda x: model(x).softmax(1)
    target = int(model(image[None]).argmax())
    captum = {}
    for ppe in [1] + [b for b in args.batch_sizes if b > 1]:
        occ = Occlusion(probabilities)
        captum[ppe] = seconds(lambda: occ.attribute(
            image[None], sliding_window_shapes=(3, args.size, args.size), strides=(3, args.stride, args.stride),
            baselines=fill.view(1, 3, 1, 1), target=target, perturbations_per_eval=ppe), args.repeats)
        print(f"captum Occlusion, perturbations_per_eval {ppe:3d}: {captum[ppe] * 1000 / n:7.2f} ms/image", flush=True)
    best_captum = min(captum.values())
    best_ppe = min(captum, key=captum.get)

    # the machine's load drifts between the scans above: re-time the two winners alternately for the headline
    bs, channels_last = best_fwd_key
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    batch = image[None].repeat(bs, 1, 1, 1).contiguous(memory_format=fmt)
    chunks = [batch] * (n // bs) + ([batch[: n % bs]] if n % bs else [])

    def plain():
        with torch.no_grad():
            for c in chunks:
                m(c)

    m = model.to(memory_format=fmt)
    occluded = lambda: occlusion_map(model, image, layer="head", size=args.size, stride=args.stride, batch_size=bs,
                                     fill=fill, channels_last=channels_last)
    best_fwd, best_ours = float("inf"), float("inf")
    for _ in range(3):
        best_fwd = min(best_fwd, seconds(plain, 1))
        best_ours = min(best_ours, seconds(occluded, 1))
    print(f"alternating re-time at batch {bs} {'NHWC' if channels_last else 'NCHW'}: forward "
          f"{best_fwd * 1000 / n:.2f}, ours {best_ours * 1000 / n:.2f} ms/image")

    headlines = []
    if args.incremental:  # Krypton-style incremental inference vs this engine's one forward per position
        import shlex

        import occlusion_incremental

        print("\nincremental occlusion vs the full-forward engine", flush=True)
        headlines = occlusion_incremental.run(occlusion_incremental.build_parser().parse_args(
            shlex.split(args.incremental_args)))

    print()
    print(f"best forward: batch {best_fwd_key[0]} {'NHWC' if best_fwd_key[1] else 'NCHW'}; best ours: batch "
          f"{best_ours_key[0]} {'NHWC' if best_ours_key[1] else 'NCHW'}; best captum: perturbations_per_eval {best_ppe}")
    print(f"occlusion_vs_forward: {best_ours / best_fwd:.2f}x the time of the plain forward pass (target: <= 1.2)")
    print(f"speedup_vs_captum_ppe1: {captum[1] / best_ours:.2f}x (target: > 1)")
    print(f"speedup_vs_captum_best: {best_captum / best_ours:.2f}x (target: > 1)")
    print("\n".join(headlines))


if __name__ == "__main__":
    main()
