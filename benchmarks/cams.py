"""Per-image time of each CAM method against pytorch-grad-cam and TorchCAM on the same model, layer, image and
target (EfficientNet-Lite0, layer ``head`` = 1,280 channels at 7x7, 224 px), with the largest difference
between the maps after the same normalization (min-max, bilinear to the input size).

    python benchmarks/cams.py [--reps 5] [--scorecam-reps 3]

Headline lines last: ``name: value (target: ...)``.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
import torch

from cnnvis import cams
from cnnvis.models import build_model, get_layer

warnings.filterwarnings("ignore")
LAYER, TARGET, SIZE = "head", 281, 224  # tabby cat


def image() -> torch.Tensor:
    import skimage.data
    from PIL import Image

    photo = Image.fromarray(skimage.data.chelsea()).resize((SIZE, SIZE), Image.BILINEAR)
    return torch.from_numpy(np.array(photo)).permute(2, 0, 1)[None].float() / 255


def timed_interleaved(fns: dict, reps: int) -> dict:
    """{name: (best seconds, median seconds, output)}: one warm-up call each (allocator, hooks, oneDNN
    primitives), then ``reps`` rounds calling every contestant in turn, so a slow spell of this shared machine
    hits all of them alike; the best round of each counts (timeit's rule: noise only ever adds time), the
    median is printed beside it."""
    outputs = {name: fn() for name, fn in fns.items()}
    times = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            start = time.perf_counter()
            outputs[name] = fn()
            times[name].append(time.perf_counter() - start)
    return {name: (min(times[name]), statistics.median(times[name]), outputs[name]) for name in fns}


def as_input_map(m) -> torch.Tensor:
    """Any library's map as (H, W), normalized and at the input size, for comparing outputs."""
    m = torch.as_tensor(np.asarray(m, dtype=np.float32)).reshape(-1, *np.shape(m)[-2:])[:1]
    return cams.normalize_maps(cams.upsample(cams.normalize_maps(m), (SIZE, SIZE)))[0]


def ours(cls, model, **kw):
    def run(x):
        with cls(model, LAYER, **kw) as method:
            return method.attribute(x, TARGET)
    return run


def pytorch_grad_cam(name, model, **attrs):
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    def run(x):
        with getattr(pytorch_grad_cam, name)(model, [get_layer(model, LAYER)]) as method:
            for k, v in attrs.items():
                setattr(method, k, v)
            return method(x, [ClassifierOutputTarget(TARGET)])
    return run


def torchcam(name, model):
    import torchcam.methods

    def run(x):
        with getattr(torchcam.methods, name)(model, LAYER and get_layer(model, LAYER), input_shape=(3, SIZE, SIZE)) as ex:
            with torch.set_grad_enabled(name != "ScoreCAM"):
                scores = model(x)
            return ex(class_idx=TARGET, scores=scores)[0].detach()
    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--scorecam-reps", type=int, default=3)
    args = parser.parse_args()
    model = build_model("efficientnet_lite0", pretrained=True, input_size=SIZE).eval()
    x = image()
    print(f"EfficientNet-Lite0, layer {LAYER} (1,280 x 7x7), {SIZE} px, one image, target {TARGET}; "
          f"torch threads {torch.get_num_threads()}; best of {args.reps} interleaved rounds (Score-CAM: "
          f"{args.scorecam_reps}) after a warm-up")
    cases = {
        "gradcam": (ours(cams.GradCAM, model), [("pytorch-grad-cam", pytorch_grad_cam("GradCAM", model)),
                                                 ("torchcam", torchcam("GradCAM", model))]),
        "gradcam++": (ours(cams.GradCAMPlusPlus, model), [("pytorch-grad-cam", pytorch_grad_cam("GradCAMPlusPlus", model)),
                                                          ("torchcam", torchcam("GradCAMpp", model))]),
        "layercam": (ours(cams.LayerCAM, model), [("pytorch-grad-cam", pytorch_grad_cam("LayerCAM", model)),
                                                  ("torchcam", torchcam("LayerCAM", model))]),
        "scorecam": (ours(cams.ScoreCAM, model), [("pytorch-grad-cam", pytorch_grad_cam("ScoreCAM", model)),
                                                  ("torchcam", torchcam("ScoreCAM", model))]),
    }
    headline = []
    for method, (mine, peers) in cases.items():
        reps = args.scorecam_reps if method == "scorecam" else args.reps
        results = timed_interleaved({"ours": lambda: mine(x), **{peer: (lambda fn=fn: fn(x)) for peer, fn in peers}},
                                    reps)
        t_ours, median_ours, m_ours = results["ours"]
        m_ours = as_input_map(m_ours)
        same_peer_times = []
        print(f"{method:10s} ours              {t_ours * 1e3:9.1f} ms/image (median {median_ours * 1e3:.1f})")
        for peer, _ in peers:
            t_peer, median_peer, m_peer = results[peer]
            diff = float((as_input_map(m_peer) - m_ours).abs().max())
            same = diff < 1e-4
            if same:
                same_peer_times.append((t_peer, peer))
            print(f"{method:10s} {peer:17s} {t_peer * 1e3:9.1f} ms/image (median {median_peer * 1e3:.1f})  ours "
                  f"{t_peer / t_ours:5.2f}x faster (medians: {median_peer / median_ours:.2f}x)  max |map difference| "
                  f"{diff:.1e} ({'same output' if same else 'different output'})")
        if method == "scorecam":
            pgc = next(t for t, p in same_peer_times if p == "pytorch-grad-cam") if same_peer_times else float("nan")
            headline.append(f"scorecam_speedup_vs_pytorch_grad_cam: {pgc / t_ours:.2f}x (target: >= 3x, identical maps)")
            headline.append(f"scorecam_seconds_per_image: {t_ours:.1f} (pytorch-grad-cam: {pgc:.1f})")
        if same_peer_times:
            fastest, who = min(same_peer_times)
            headline.append(f"{method}_vs_fastest_peer_same_output: {fastest / t_ours:.2f}x ({who}; target: >= 1x)")
    for line in headline:
        print(line)


if __name__ == "__main__":
    main()
