"""Time to write the default phantom campaign (24 cases at 3 mm, .nii.gz included).

Run: ``.venv/bin/python benchmarks/bench_phantoms.py [--workers 2] [--cases 24]``
Target: under 20 s on 2 cores for the default campaign (~0.3 s per case).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from alqa_core.phantoms.campaign import CampaignSpec, write_campaign
from alqa_core.phantoms.generate import PhantomSpec, generate_case


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cases", type=int, default=24)
    parser.add_argument("--spacing", type=float, default=3.0)
    args = parser.parse_args()

    spacing = (args.spacing,) * 3
    generate_case(PhantomSpec(0, spacing_mm=spacing))  # warm imports
    gen = []
    for seed in range(5):
        t0 = time.perf_counter()
        generate_case(PhantomSpec(seed, spacing_mm=spacing))
        gen.append(time.perf_counter() - t0)
    print(f"generate_case at {args.spacing} mm: median {np.median(gen):.3f} s (no writing)")

    spec = CampaignSpec(n_cases=args.cases, spacing_mm=spacing)
    for workers in sorted({1, args.workers}):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            layout = write_campaign(Path(tmp) / "campaign", spec, workers=workers)
            elapsed = time.perf_counter() - t0
            size_mb = sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file()) / 1e6
        print(
            f"write_campaign {len(layout.cases)} cases, {args.spacing} mm, workers={workers}: "
            f"{elapsed:.2f} s total, {elapsed / len(layout.cases):.3f} s per case, {size_mb:.1f} MB"
        )


if __name__ == "__main__":
    main()
