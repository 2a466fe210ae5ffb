"""The GPU path: full-size inference with bf16 AMP, one fine-tuning round, attention on the GPU, and the 8,448-case projection.

Run::

    .venv/bin/python benchmarks/bench_gpu.py                      # on a CUDA GPU (without one: says so, exits 0)
    .venv/bin/python benchmarks/bench_gpu.py --device cpu --tiny  # smoke test: the same code paths on the CPU at toy size

What it measures, in one process, on synthetic data (timing does not depend
on the image content, except attention, whose phantom is organ-like):

1. Inference (:func:`alqa_core.ensemble.inference.predict_probabilities`)
   of one case per ensemble member (``--archs``, the AbdomenAtlas ensemble
   of U-Net, SegResNet and Swin UNETR by default) at the ``full`` registry
   preset, with bf16 autocast (``--amp``), MONAI's sliding window
   (``--roi``, ``--sw-batch-size``), after one warm-up call; the best of
   ``--repeats``. The first member is also run without AMP: the agreement
   (max |dp|, Dice at p > 0.5) of AMP with float32 is printed.
2. One fine-tuning round (:func:`alqa_core.training.trainer.train`, with
   ``parent`` = a checkpoint of the same network, i.e. the fine-tune path at
   its lr): ``--train-iterations`` steps of the trainer's patches
   (``--patch``, batch 2, its own AMP: fp16 with a grad scaler on CUDA) and
   the validation of one case; per-step and validation seconds are printed.
3. Attention on the GPU (:mod:`alqa_core.attention.kernel_torch`) on an
   organ-like uint8 block of the case (3 members x 10 organs): the kernel
   with the block already on the GPU and from host memory, against the
   numba kernel on this machine's CPU (bits compared), and
   :func:`~alqa_core.attention.compute.compute_attention` (cleaning and
   sizes stay on the CPU) with each backend.

The projection for AbdomenAtlas-8K's step 2 (every case through every
member, then attention; the paper reports ~12 h; alqa's goal: < 2 h on one
GPU) is ``cases x (sum of the members' inference seconds + attention
seconds)``. It counts GPU work only: reading and preprocessing the CT,
resampling the probabilities to the original grid and writing NIfTI run on
the CPU and overlap with the GPU when the pipeline streams cases.

Assumed case (``--case-shape``, default 256 x 256 x 200 voxels at 1.5 mm):
an abdominal CT's axial field of view is 350-400 mm (a 512 x 512 matrix at
0.7-0.8 mm), i.e. 233-267 voxels at 1.5 mm, and the abdomen (diaphragm to
pelvis) spans ~300 mm, i.e. 200 slices; cropping to the body keeps about
that much. Thin-slice scans that include the chest or legs are larger,
thick-slice scans are resampled to the same grid.
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_attention import phantom  # noqa: E402

from alqa_core.attention.compute import compute_attention  # noqa: E402
from alqa_core.attention.kernel import organ_statistics, resolve_backend  # noqa: E402
from alqa_core.config.models import DIVISIBILITY, ModelSpec  # noqa: E402
from alqa_core.config.sections import AttentionConfig, InferenceConfig, TrainConfig  # noqa: E402
from alqa_core.ensemble.checkpoint import CheckpointMeta, Lineage, save_checkpoint  # noqa: E402
from alqa_core.ensemble.inference import predict_probabilities, prepare_network  # noqa: E402
from alqa_core.ensemble.networks import build_network  # noqa: E402
from alqa_core.organs import DEFAULT_ORGAN_TABLE, OrganTable  # noqa: E402
from alqa_core.training.cases import TrainingCase  # noqa: E402
from alqa_core.training.trainer import EpochFinished, train  # noqa: E402
from alqa_core.training.validation import validation_dice  # noqa: E402

ATLAS_CASES = 8448
ATLAS_MEMBERS = 3
ATLAS_HOURS = 12.0  # 003, step 2: "Direct test the current model on all 8,448 CT volumes ... around 12 hours"
GOAL_HOURS = 2.0


def synthetic_case(shape, seed: int, table: OrganTable) -> tuple[np.ndarray, np.ndarray]:
    """(image float32 in [0, 1], label uint8): a body ellipsoid with one ellipsoid per organ at a jittered place."""
    rng = np.random.default_rng(seed)
    n = np.asarray(shape, dtype=np.float32)
    g = np.meshgrid(*[np.linspace(0.0, 1.0, s, dtype=np.float32) for s in shape], indexing="ij", sparse=True)
    body = sum(((x - 0.5) / 0.45) ** 2 for x in g) <= 1
    image = np.where(body, 0.45, 0.0).astype(np.float32)
    label = np.zeros(shape, np.uint8)
    for i, name in enumerate(table.names):
        centre = rng.uniform(0.3, 0.7, 3)
        radii = rng.uniform(0.05, 0.15, 3)
        inside = sum(((x - c) / r) ** 2 for x, c, r in zip(g, centre, radii)) <= 1
        image[inside] = 0.55 + 0.04 * (i % 8)
        label[inside] = table.value_of(name)
    image += rng.normal(0, 0.03, image.shape).astype(np.float32)
    return np.clip(image, 0, 1), label


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_time(fn, repeats: int, device: torch.device):
    out, best = None, math.inf
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        out = fn()
        sync(device)
        best = min(best, time.perf_counter() - t)
    return best, out


def peak_gib(device: torch.device) -> str:
    return f"{torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB" if device.type == "cuda" else "n/a"


def dice_at_half(a: np.ndarray, b: np.ndarray) -> float:
    x, y = a > 0.5, b > 0.5
    denom = x.sum() + y.sum()
    return 1.0 if denom == 0 else float(2 * (x & y).sum() / denom)


def bench_inference(args, device, table, image) -> dict[str, float]:
    print(f"\n== 1. inference, one case {image.shape} at {args.spacing_mm} mm, {args.size} networks, amp={args.amp}, "
          f"roi {args.roi}, sw_batch_size {args.sw_batch_size}, overlap 0.25, gaussian blending")
    print(f"  {'member':12s} {'params M':>9s} {'s/case':>8s} {'Mvox/s':>8s} {'peak GPU':>9s}")
    seconds = {}
    for i, arch in enumerate(args.archs):
        torch.manual_seed(i)
        net = build_network(ModelSpec(arch, args.size, len(table)))
        cfg = InferenceConfig(roi_size_vox=args.roi, sw_batch_size=args.sw_batch_size, device=str(device), amp=args.amp,
                              roi_divisible_by=max(DIVISIBILITY.values()))
        prepared = prepare_network(net, cfg)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        predict_probabilities(prepared, image, cfg)  # warm-up (cuDNN autotuning, allocator)
        t, probs = best_time(lambda: predict_probabilities(prepared, image, cfg), args.repeats, device)
        seconds[arch] = t
        params = sum(p.numel() for p in net.parameters()) / 1e6
        print(f"  {arch:12s} {params:9.1f} {t:8.2f} {image.size / t / 1e6:8.1f} {peak_gib(device):>9s}")
        if i == 0 and args.amp != "off":
            ref_cfg = InferenceConfig(roi_size_vox=args.roi, sw_batch_size=args.sw_batch_size, device=str(device), amp="off",
                                      roi_divisible_by=max(DIVISIBILITY.values()))
            t_ref, ref = best_time(lambda: predict_probabilities(prepare_network(net, ref_cfg), image, ref_cfg), 1, device)
            dice = min(dice_at_half(probs[c], ref[c]) for c in range(len(table)))
            print(f"  {'':12s} float32 (no AMP): {t_ref:.2f} s/case, {t_ref / t:.2f}x the AMP time; AMP vs float32: "
                  f"max |dp| {np.abs(probs - ref).max():.4f}, min Dice at p > 0.5 {dice:.4f} (random weights: p sits near 0.5)")
        del prepared, net
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print(f"  all {len(args.archs)} members: {sum(seconds.values()):.2f} s/case")
    return seconds


def bench_training(args, device, table) -> None:
    arch = args.archs[0]
    print(f"\n== 2. one fine-tuning round: {arch} ({args.size}), {args.train_iterations} steps of batch 2 x {args.patch} patches, "
          f"then the validation of one {args.train_shape} case")
    cases = []
    for seed in range(3):
        image, label = synthetic_case(args.train_shape, 100 + seed, table)
        cases.append(TrainingCase(f"synthetic{seed}", image, label, table.names))
    spec = ModelSpec(arch, args.size, len(table))
    cfg = TrainConfig(patch_size_vox=args.patch, batch_size=2, max_epochs=1, iterations_per_epoch=args.train_iterations, device=str(device),
                      amp="auto", val_case_ids=("synthetic2",), sw_batch_size=args.sw_batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        parent = Path(tmp) / "parent.pt"
        meta = CheckpointMeta(spec=spec, organ_table=table, spacing_mm=(args.spacing_mm,) * 3,
                              lineage=Lineage(None, None, "0" * 64, 0), train_config={}, val_metrics={}, run_info={})
        save_checkpoint(parent, build_network(spec), meta)
        epochs = []
        t = time.perf_counter()
        result = train(spec, cases, cfg, table, (args.spacing_mm,) * 3, parent=parent, round_index=1,
                       progress=lambda e: epochs.append(e) if isinstance(e, EpochFinished) else None)
        sync(device)
        total = time.perf_counter() - t
    sync(device)
    t = time.perf_counter()
    validation_dice(result.network, cases[2:], table, args.patch, device, result.meta.run_info["amp"], args.sw_batch_size, 0.25)
    sync(device)
    t_val = time.perf_counter() - t
    epoch = epochs[0].seconds
    per_step = max(epoch - t_val, 0.0) / args.train_iterations
    print(f"  train(): {total:.1f} s in all (set-up, checkpoint load, one epoch); the epoch {epoch:.1f} s; amp={result.meta.run_info['amp']}, "
          f"peak GPU {peak_gib(device)}")
    print(f"  per training step {per_step:.3f} s, validation of one case {t_val:.1f} s")
    default = TrainConfig()
    worst = default.max_epochs * (default.iterations_per_epoch * per_step + t_val)
    print(f"  a round at the defaults (at most {default.max_epochs} epochs x {default.iterations_per_epoch} steps, early stopping usually "
          f"far sooner): <= {worst / 3600:.1f} h per member; per 10 epochs {10 * (default.iterations_per_epoch * per_step + t_val) / 60:.1f} min")


def bench_attention(args, device) -> float:
    shape, spacing = tuple(args.case_shape), (args.spacing_mm,) * 3
    block = phantom(shape, spacing)  # uint8 (3 members, 10 organs, i, j, k)
    m, c = block.shape[:2]
    print(f"\n== 3. attention, organ-like block {block.shape} uint8 = {block.nbytes / 1e6:.0f} MB")
    block3 = block.reshape(m, c, -1)
    cov, hot, scored, cfg = np.ones((m, c), bool), np.zeros(m, bool), list(range(c)), AttentionConfig()
    on_device = torch.from_numpy(block3).to(device)
    organ_statistics(on_device, cov, hot, scored, cfg, backend="torch")  # warm-up
    t_dev, gpu = best_time(lambda: organ_statistics(on_device, cov, hot, scored, cfg, backend="torch"), args.repeats, device)
    t_host, _ = best_time(lambda: organ_statistics(block3, cov, hot, scored, cfg, backend="torch", device=str(device)), args.repeats, device)
    cpu_backend = resolve_backend("auto")
    organ_statistics(block3, cov, hot, scored, cfg, backend=cpu_backend)
    t_cpu, ref = best_time(lambda: organ_statistics(block3, cov, hot, scored, cfg, backend=cpu_backend), args.repeats, device)
    fields = ("band", "inconsistent", "uncertain", "std", "entropy", "overlap")
    same = all(getattr(gpu[k], f).tobytes() == getattr(ref[k], f).tobytes() for k in ref for f in fields)
    same &= all(gpu[k].organ_voxels == ref[k].organ_voxels for k in ref)
    organs = [f"organ{i}" for i in range(c)]
    t_total_dev, _ = best_time(lambda: compute_attention(block, organs=organs, spacing_mm=spacing, backend="torch", device=str(device)), 1, device)
    t_total_cpu, _ = best_time(lambda: compute_attention(block, organs=organs, spacing_mm=spacing, backend=cpu_backend), 1, device)
    print(f"  Eq. 1-3, torch on {device}: {t_dev * 1e3:.1f} ms with the block on the device, {t_host * 1e3:.1f} ms from host memory; "
          f"{cpu_backend} on the CPU: {t_cpu * 1e3:.1f} ms; bits equal: {same}")
    print(f"  compute_attention (cleaning and sizes on the CPU): torch {t_total_dev:.2f} s, {cpu_backend} {t_total_cpu:.2f} s")
    return min(t_total_dev, t_total_cpu)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    ap.add_argument("--tiny", action="store_true", help="toy sizes and tiny networks (for a smoke test on a CPU)")
    ap.add_argument("--archs", default="unet,segresnet,swinunetr")
    ap.add_argument("--case-shape", default=None, help="i,j,k voxels of the case at --spacing-mm (default 256,256,200)")
    ap.add_argument("--spacing-mm", type=float, default=1.5)
    ap.add_argument("--amp", default="bf16", choices=("bf16", "fp16", "off", "auto"))
    ap.add_argument("--roi", default="96,96,96")
    ap.add_argument("--sw-batch-size", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--train-iterations", type=int, default=None)
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: inference, training, attention")
    args = ap.parse_args()
    args.archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    args.size = "tiny" if args.tiny else "full"
    args.case_shape = [int(v) for v in (args.case_shape or ("64,64,48" if args.tiny else "256,256,200")).split(",")]
    args.roi = tuple(int(v) for v in (("64,64,64" if args.tiny else args.roi).split(",")))  # Swin UNETR needs 64
    args.patch = (32, 32, 32) if args.tiny else (96, 96, 96)
    args.train_shape = (48, 48, 40) if args.tiny else (160, 160, 128)
    args.train_iterations = args.train_iterations or (2 if args.tiny else 20)
    if args.tiny:
        args.repeats = 1

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"No CUDA GPU is available here (torch {torch.__version__}, built for CUDA {torch.version.cuda}): nothing measured. "
              "Run on a GPU machine, or `--device cpu --tiny` for a smoke test of the code paths.")
        return 0
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # a process-wide switch, left to the caller by alqa_core.ensemble.inference
        props = torch.cuda.get_device_properties(device)
        print(f"{props.name}, {props.total_memory / 2**30:.0f} GiB, bf16 {torch.cuda.is_bf16_supported()}; torch {torch.__version__}, CUDA {torch.version.cuda}")
    else:
        print(f"CPU ({platform.machine()}, {torch.get_num_threads()} torch threads); torch {torch.__version__}"
              + ("; toy sizes: the figures say nothing about a GPU" if args.tiny else ""))
    table = DEFAULT_ORGAN_TABLE  # AbdomenAtlas-8K's 9 classes (8 organs, both kidneys)
    image, _ = synthetic_case(tuple(args.case_shape), 0, table)

    inference = bench_inference(args, device, table, image) if "inference" not in skip else {}
    if "training" not in skip:
        bench_training(args, device, table)
    attention = bench_attention(args, device) if "attention" not in skip else 0.0

    print("\n== projection: AbdomenAtlas-8K step 2 (every case through every member, then attention) on this device")
    if not inference:
        print("  inference skipped: no projection")
        return 0
    per_case = sum(inference.values()) + attention
    hours = ATLAS_CASES * per_case / 3600
    print(f"  per case: {sum(inference.values()):.2f} s inference ({', '.join(f'{a} {s:.2f}' for a, s in inference.items())}) "
          f"+ {attention:.2f} s attention = {per_case:.2f} s")
    note = "" if len(inference) == ATLAS_MEMBERS else f" -- {len(inference)} members measured, not {ATLAS_MEMBERS}"
    note += " -- toy sizes on a CPU: not a real projection" if args.tiny else ""
    print(f"  {ATLAS_CASES} cases x {len(inference)} members: {hours:.2f} h (AbdomenAtlas reports ~{ATLAS_HOURS:.0f} h for "
          f"{ATLAS_MEMBERS}; goal < {GOAL_HOURS:.0f} h: {'met' if hours < GOAL_HOURS else 'NOT met'}){note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
