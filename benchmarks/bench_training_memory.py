"""Peak memory of training: every case loaded up front (the old path) against streamed cases (a bounded pool), at N cases.

    .venv/bin/python benchmarks/bench_training_memory.py [--cases 20 200] [--spacing 4] [--pool 8] [--no-qa]

1. Writes max(N) phantom cases (``alqa_core.phantoms``) at a coarse spacing
   into a workspace as ingest leaves them: preprocessed volume, grid record,
   label on the original grid (``--work DIR`` keeps and reuses them).
2. For each N and each path, a fresh subprocess trains a tiny U-Net for a
   few epochs on the first N cases (every organ annotated, 10% validation),
   with the QA-loss term on (an untrained tiny regressor, one case every
   2nd step) over the same N volumes as its unlabeled cases:
   - ``eager``: what ``train_round`` did before: ``load_training_cases``
     (every item in memory), the sampler's pool holding them all, the QA
     term given every volume in memory;
   - ``stream``: what it does now: ``lazy_training_cases`` handles, at most
     ``--pool`` prepared cases (``training.cases_in_memory``), validation one
     case at a time, the QA term reading ``UnlabeledFile`` s through a pool
     of the same size.
   Each child reports its peak RSS (``getrusage`` ``ru_maxrss``), its RSS
   after imports and network set-up (the floor no data is in), and its wall time.
3. Prints a table and ratios: stream/eager at each N, and growth from the
   smallest to the largest N for each path.

Both paths use the same sampler code (with nnU-Net's foreground budget), so
the eager figures are the old data path, not byte-for-byte the old sampler.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _write_case(args) -> str:
    from alqa_core.config.sections import PreprocessConfig
    from alqa_core.ingest.preprocess import preprocess_ct
    from alqa_core.io.atomic import atomic_write_text
    from alqa_core.io.nifti import write_label, write_nifti
    from alqa_core.phantoms.generate import PhantomSpec, generate_case
    from alqa_core.workspace import WorkspaceLayout

    root, seed, spacing = args
    layout, case_id = WorkspaceLayout(Path(root)), f"ph{seed:04d}"
    if layout.grid_record(case_id).exists():
        return case_id
    phantom = generate_case(PhantomSpec(seed=seed, spacing_mm=(spacing,) * 3))
    pre = preprocess_ct(phantom.ct, PreprocessConfig(spacing_mm=(spacing,) * 3, pad_to_multiple=16))
    write_nifti(layout.preprocessed(case_id), pre.array, pre.record.output.affine)
    write_label(layout.original_label(case_id), phantom.labels)
    atomic_write_text(layout.grid_record(case_id), json.dumps(pre.record.to_dict()))  # last: marks the case complete
    return case_id


def child(args) -> None:
    """One training run in this (fresh) process; prints one JSON line."""
    import numpy as np
    import torch

    from alqa_core.config.models import ModelSpec
    from alqa_core.config.sections import QALossConfig, QARegressorConfig, TrainConfig
    from alqa_core.io.nifti import read_nifti_array
    from alqa_core.organs import DEFAULT_ORGAN_TABLE
    from alqa_core.qa.regressor import build_qa_regressor
    from alqa_core.training.data import lazy_training_cases, load_training_cases
    from alqa_core.training.qa_loss import UnlabeledCase, UnlabeledFile, build_qa_loss
    from alqa_core.training.trainer import train
    from alqa_core.training.training_set import TrainingSource
    from alqa_core.workspace import WorkspaceLayout

    torch.set_num_threads(1)
    layout = WorkspaceLayout(Path(args.work))
    ids = [f"ph{s:04d}" for s in range(args.n)]
    sources = [TrainingSource(c, layout.original_label(c), DEFAULT_ORGAN_TABLE.names, "original") for c in ids]
    spec = ModelSpec("unet", "tiny", len(DEFAULT_ORGAN_TABLE))
    torch.manual_seed(0)
    regressor = build_qa_regressor(QARegressorConfig(widen_factor=0.125, input_px=32, num_threads=1))
    floor_mb = _rss_mb()
    t0 = time.perf_counter()
    eager = args.mode == "eager"
    pool = args.n if eager else args.pool
    cases = load_training_cases(sources, layout) if eager else lazy_training_cases(sources, layout)
    qa = None
    if args.qa:
        if eager:
            unlabeled = [UnlabeledCase(c, np.asarray(read_nifti_array(layout.preprocessed(c))[0], dtype=np.float32)) for c in ids]
        else:
            unlabeled = [UnlabeledFile(c, layout.preprocessed(c)) for c in ids]
        qa_cfg = QALossConfig(weight=0.1, regressor=regressor, montage_px=32, via_px=None, every_n_steps=2, montage_slices=16)
        qa = build_qa_loss(qa_cfg, unlabeled, DEFAULT_ORGAN_TABLE, cases_in_memory=None if eager else pool,
                           steps_per_refresh=args.iterations, refreshes=args.epochs)
    cfg = TrainConfig(
        patch_size_vox=(32, 32, 32), batch_size=2, max_epochs=args.epochs, iterations_per_epoch=args.iterations, val_fraction=0.1,
        seed=0, device="cpu", num_threads=1, sw_batch_size=4, cases_in_memory=pool,
    )
    result = train(spec, cases, cfg, DEFAULT_ORGAN_TABLE, (args.spacing,) * 3, training_set_sha256="0" * 64, extra_loss=qa)
    seconds = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux
    print(json.dumps({"mode": args.mode, "n": args.n, "pool": pool, "floor_mb": floor_mb, "peak_mb": peak_mb, "seconds": seconds,
                      "epochs": len(result.history), "val_cases": len(result.meta.run_info["val_case_ids"])}))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", type=int, nargs="+", default=[20, 200])
    ap.add_argument("--spacing", type=float, default=4.0, help="mm, isotropic (4 mm: ~96x64x64 voxels a case)")
    ap.add_argument("--pool", type=int, default=8, help="training.cases_in_memory of the streaming path")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=4)
    ap.add_argument("--no-qa", dest="qa", action="store_false", help="leave the QA-loss term off")
    ap.add_argument("--work", default=None, help="workspace for the phantom cases (kept and reused); default: a temporary folder")
    ap.add_argument("--child", choices=["eager", "stream"], help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        args.mode = args.child
        child(args)
        return

    work = Path(args.work or tempfile.mkdtemp(prefix="alqa_trainmem_"))
    t = time.perf_counter()
    with ProcessPoolExecutor(2) as ex:
        list(ex.map(_write_case, [(str(work), s, args.spacing) for s in range(max(args.cases))], chunksize=8))
    print(f"{max(args.cases)} phantom cases at {args.spacing:g} mm in {work} ({time.perf_counter() - t:.0f} s to write or find)")
    print(f"each run: tiny U-Net, {args.epochs} epochs x {args.iterations} iterations, batch 2, 32^3 patches, 10% validation, "
          f"QA term {'on' if args.qa else 'off'}; stream pool = {args.pool} cases\n")

    rows = {}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    for n in args.cases:
        for mode in ("eager", "stream"):
            cmd = [sys.executable, __file__, "--child", mode, "--n", str(n), "--work", str(work), "--spacing", str(args.spacing),
                   "--pool", str(args.pool), "--epochs", str(args.epochs), "--iterations", str(args.iterations)]
            if not args.qa:
                cmd.append("--no-qa")
            out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
            rows[mode, n] = json.loads(out.strip().splitlines()[-1])
            r = rows[mode, n]
            print(f"  N={n:5d} {mode:6s}: peak RSS {r['peak_mb']:7.0f} MB (floor {r['floor_mb']:4.0f} MB, above it {r['peak_mb'] - r['floor_mb']:6.0f} MB), "
                  f"{r['seconds']:6.1f} s, {r['val_cases']} validation cases", flush=True)

    print("\n     N | eager peak MB | stream peak MB | stream/eager | eager above floor | stream above floor")
    for n in args.cases:
        e, s = rows["eager", n], rows["stream", n]
        print(f"{n:6d} | {e['peak_mb']:13.0f} | {s['peak_mb']:14.0f} | {s['peak_mb'] / e['peak_mb']:12.2f} | "
              f"{e['peak_mb'] - e['floor_mb']:14.0f} MB | {s['peak_mb'] - s['floor_mb']:15.0f} MB")
    lo, hi = min(args.cases), max(args.cases)
    for mode in ("eager", "stream"):
        a, b = rows[mode, lo], rows[mode, hi]
        print(f"{mode:6s}: peak RSS at N={hi} / at N={lo}: {b['peak_mb'] / a['peak_mb']:.2f}x; wall time {b['seconds'] / a['seconds']:.2f}x")


if __name__ == "__main__":
    main()
