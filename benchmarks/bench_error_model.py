"""Cost of one error-model case against making its phantom ground truth (the baseline, same process).

Per case, the error-model campaign generates the phantom (labels cropped to the organs),
makes the members (:func:`alqa_core.simulator.error_model.members.make_members`), then the pseudo
label, Eq. 1-4 attention, the uncertainty curves, the round-0 labelled dataset and the
Table 1 scores (:func:`alqa_core.simulator.error_model.cases.prepare_case`). Printed: median
seconds of each and their ratio to generating the phantom, and the cases per minute on one
core (the campaign runs ``--workers`` processes).

Run: ``.venv/bin/python benchmarks/bench_error_model.py [--cases 20] [--spacing 4]``
Target: 1,000 cases per seed in a few minutes on 2 cores (under ~0.3 s per case per core).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from alqa_core.organs import DEFAULT_ORGAN_TABLE
from alqa_core.phantoms.generate import generate_case
from alqa_core.simulator.error_model.members import ErrorModelConfig, make_members
from alqa_core.simulator.error_model.evidence import TUNED_ATTENTION
from alqa_core.simulator.error_model.cases import ground_truth, phantom_sources, prepare_case


def _median(fn, items) -> float:
    times = []
    for item in items:
        t0 = time.perf_counter()
        fn(item)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--spacing", type=float, default=4.0)
    args = parser.parse_args()

    table, config = DEFAULT_ORGAN_TABLE, ErrorModelConfig()
    sources = phantom_sources(args.cases, 7, args.spacing)
    prepare_case(sources[0], (7, 0), False, config, TUNED_ATTENTION, table, 0.1)  # warm imports and caches
    truths = {s.case_id: ground_truth(s, table) for s in sources}
    phantom = _median(lambda s: generate_case(s.phantom), sources)
    members = _median(lambda s: make_members(truths[s.case_id], table, config, (7, 1)), sources)
    full = _median(lambda s: prepare_case(s, (7, 2), False, config, TUNED_ATTENTION, table, 0.1), sources)
    shape = next(iter(truths.values())).shape
    print(f"{args.cases} phantom cases at {args.spacing:g} mm (cropped grid e.g. {shape}), {config.n_members} members")
    print(f"generate_case (baseline):    {phantom:.3f} s median")
    print(f"make_members:                {members:.3f} s median  ({members / phantom:.1f}x the phantom)")
    print(f"prepare_case (everything):   {full:.3f} s median  ({full / phantom:.1f}x the phantom)")
    print(f"=> {60.0 / full:.0f} cases per minute per core; 1,000 cases on 2 cores ~ {1000 * full / 2 / 60:.1f} min")


if __name__ == "__main__":
    main()
