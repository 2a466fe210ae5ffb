"""Benchmark: alqa's inference path vs MONAI's plain sliding-window call.

Same network (a tiny UNet from the registry with seeded random weights, or
a trained alqa checkpoint with ``--checkpoint``), same synthetic volume, one
process.
The baseline is the call most code writes::

    sliding_window_inference(inputs, roi_size, sw_batch_size=1, predictor)

with default arguments (overlap 0.25, constant blending, no grad context),
followed by the same sigmoid and copy to numpy as ours. Runs alternate
(baseline, ours, baseline, ...) so background load hits both alike; the
minimum and median of the repeats are printed.

Agreement tolerance: a variant that does the same math (constant blending,
float32) must agree with the baseline to max |dp| <= 1e-4 and Dice >= 0.999
per organ at p > 0.5 (an untrained network's probabilities sit near 0.5, so
this Dice is a strict test: any numerical drift flips voxels). Autocast on
CUDA changes the math; it must reach Dice >= 0.99. The gaussian line uses
alqa's default blending, which is a quality choice, not a speed trick: it is
timed, and its agreement printed, but not checked. The script exits with
status 1 if a checked tolerance is violated. The verdict on the 2x target
uses the ratio of the fastest runs (least disturbed by other load); the
median ratio is printed beside it.

Usage::

    .venv/bin/python benchmarks/bench_inference.py                 # CPU
    .venv/bin/python benchmarks/bench_inference.py --device cuda   # GPU (autocast on)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from monai.inferers import sliding_window_inference

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alqa_core.config.models import ModelSpec
from alqa_core.config.sections import InferenceConfig
from alqa_core.ensemble.inference import predict_probabilities, prepare_network  # noqa: E402
from alqa_core.ensemble.networks import build_network  # noqa: E402

TARGET_SPEEDUP = 2.0
SAME_MATH_MAX_ABS = 1e-4
SAME_MATH_DICE = 0.999
CHANGED_MATH_DICE = 0.99


def synthetic_volume(shape, seed: int) -> np.ndarray:
    """Windowed-CT-like volume in [0, 1]: a body cylinder with two ellipsoidal 'organs' and noise."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, n, dtype=np.float32) for n in shape], indexing="ij")
    body = sum(g**2 for g in grids[:2]) < 0.85
    img = np.where(body, 0.45, 0.0).astype(np.float32)
    for level in (0.85, 0.62):
        centre = rng.uniform(-0.35, 0.35, 3)
        axes = rng.uniform(0.18, 0.32, 3)
        img[sum(((g - m) / a) ** 2 for g, m, a in zip(grids, centre, axes)) < 1.0] = level
    img += rng.normal(0, 0.04, shape).astype(np.float32)
    return np.clip(img, 0, 1)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    denom = a.sum() + b.sum()
    return 1.0 if denom == 0 else 2.0 * np.count_nonzero(a & b) / denom


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--shape", type=int, nargs=3, default=(160, 160, 64))
    ap.add_argument("--roi", type=int, nargs=3, default=(96, 96, 64))
    ap.add_argument("--arch", default="unet")
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0 = torch's default)")
    ap.add_argument("--checkpoint", default=None, help="an alqa checkpoint to use instead of a random tiny UNet")
    ap.add_argument("--sw-batch-size", type=int, default=4)
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("--device cuda: CUDA is not available here")
        return 2
    torch.manual_seed(0)
    if args.checkpoint:
        from alqa_core.ensemble.checkpoint import load_checkpoint

        net = load_checkpoint(args.checkpoint, "cpu").network
        which = f"checkpoint {args.checkpoint}"
    else:
        net = build_network(ModelSpec(args.arch, args.size, 2)).eval()
        which = f"{args.arch}/{args.size} (random weights, seed 0)"
    img = synthetic_volume(tuple(args.shape), seed=7)
    roi = tuple(args.roi)
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, {which}, "
          f"volume {tuple(args.shape)}, roi {roi}, repeats {args.repeats}")

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    plain_net = net.to(device).eval()
    x = torch.from_numpy(img)[None, None].to(device)

    def baseline():
        out = sliding_window_inference(x, roi, 1, plain_net)
        return torch.sigmoid(out)[0].detach().cpu().numpy()

    def baseline_no_grad():
        with torch.no_grad():
            return baseline()

    def ours(cfg):
        t0 = time.perf_counter()
        prepared = prepare_network(net, cfg)
        prep_s = time.perf_counter() - t0
        return (lambda: predict_probabilities(prepared, img, cfg)), prep_s

    common = dict(roi_size_vox=roi, device=args.device, roi_divisible_by=16)
    sw = args.sw_batch_size
    default_name = "alqa defaults (channels-last on CPU / autocast on CUDA), constant"
    # name: (callable, check, prepare seconds); check is "same", "changed" or "info"
    variants = {
        "monai plain (baseline)": (baseline, "same", 0.0),
        "monai plain + torch.no_grad": (baseline_no_grad, "same", 0.0),
    }
    ours_list = [
        ("alqa sw_batch=1, no channels-last", dict(sw_batch_size=1, channels_last="off", amp="off"), "same"),
        (f"alqa sw_batch={sw}, no channels-last", dict(sw_batch_size=sw, channels_last="off", amp="off"), "same"),
        (f"alqa sw_batch={sw}, channels-last", dict(sw_batch_size=sw, channels_last="on", amp="off"), "same"),
        (default_name, dict(sw_batch_size=sw), "same" if device.type == "cpu" else "changed"),
    ]
    for name, kw, check in ours_list:
        fn, prep_s = ours(InferenceConfig(**common, blend_mode="constant", **kw))
        variants[name] = (fn, check, prep_s)
    fn, prep_s = ours(InferenceConfig(**common, sw_batch_size=sw))
    variants["alqa defaults, gaussian blend (default blend)"] = (fn, "info", prep_s)

    # Warm-up (oneDNN primitive caches, cuDNN autotune) and reference outputs.
    outputs = {}
    for name, (fn, _, _) in variants.items():
        outputs[name] = fn()
        sync()
    times = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, (fn, _, _) in variants.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)

    ref = outputs["monai plain (baseline)"]
    base_min = min(times["monai plain (baseline)"])
    base_med = statistics.median(times["monai plain (baseline)"])
    print(f"{'variant':66s} {'min s':>7s} {'median s':>8s} {'x(min)':>7s} {'x(med)':>7s} {'max|dp|':>9s} {'Dice':>7s}  check")
    ok = True
    for name, (_, check, prep_s) in variants.items():
        out = outputs[name]
        max_abs = float(np.abs(out - ref).max())
        d = min(dice(out[c] > 0.5, ref[c] > 0.5) for c in range(out.shape[0]))
        if check == "same":
            passed = max_abs <= SAME_MATH_MAX_ABS and d >= SAME_MATH_DICE
            tag = f"same math (<= {SAME_MATH_MAX_ABS:g}, >= {SAME_MATH_DICE}): " + ("ok" if passed else "FAIL")
        elif check == "changed":
            passed = d >= CHANGED_MATH_DICE
            tag = f"autocast (Dice >= {CHANGED_MATH_DICE}): " + ("ok" if passed else "FAIL")
        else:
            passed, tag = True, "blending differs: not checked"
        ok &= passed
        t_min, t_med = min(times[name]), statistics.median(times[name])
        prep = f" (+{prep_s * 1000:.0f} ms prepare, once per batch)" if prep_s else ""
        print(f"{name:66s} {t_min:7.3f} {t_med:8.3f} {base_min / t_min:7.2f} {base_med / t_med:7.2f} "
              f"{max_abs:9.2e} {d:7.4f}  {tag}{prep}")
    x_min = base_min / min(times[default_name])
    x_med = base_med / statistics.median(times[default_name])
    verdict = "met" if x_min >= TARGET_SPEEDUP else "MISSED"
    print(f"alqa defaults vs the plain call: {x_min:.2f}x (fastest runs), {x_med:.2f}x (medians); "
          f"target {TARGET_SPEEDUP:g}x on {device.type}: {verdict}")
    if not ok:
        print("agreement FAILED for at least one checked variant")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
