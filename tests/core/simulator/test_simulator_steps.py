"""One round implementation: the simulators run the platform's own attention, priority, queue, strategies and reassembly."""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from alqa_core.annotation.queue import round_queue as platform_queue
from alqa_core.simulator import steps
from alqa_core.simulator.error_model.evidence import EvidenceConfig, run_seed

SIMULATOR = Path(__file__).resolve().parents[3] / "alqa_core" / "simulator"
#: the platform's round functions; only steps.py may call them (anything else would be a second copy of the round)
ROUND_FUNCTIONS = {
    "attention_from_predictions", "compute_attention", "priority_from_attention", "rank_attention_rows", "rank_frame", "queue_for_round", "select_queue",
    "outlier_queue", "queue_budget", "select", "uncertainty_slice_sampling", "random_slice_sampling", "uncertainty_volume_sampling",
    "random_volume_sampling", "foreground_random_sampling", "BudgetFiller", "reassemble", "reassemble_case", "apply_slice_revision",
}


def _imported_names(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("alqa_core"):
            names |= {a.name for a in node.names}
    return names


def test_only_steps_imports_the_platforms_round_functions():
    offenders = {p.name: sorted(_imported_names(p) & ROUND_FUNCTIONS) for p in SIMULATOR.rglob("*.py") if p.name != "steps.py"}
    assert not {k: v for k, v in offenders.items() if v}
    assert {"attention_from_predictions", "priority_from_attention", "queue_for_round", "select", "reassemble"} <= _imported_names(SIMULATOR / "steps.py")
    # and no module of the simulator defines a queue or a budget filler of its own
    defined = {node.name for p in SIMULATOR.rglob("*.py") for node in ast.walk(ast.parse(p.read_text())) if isinstance(node, ast.FunctionDef)}
    assert not defined & {"_fill_volumes", "_fill_slices", "rank_frame", "select_queue", "outlier_queue"}


@pytest.fixture
def counted(monkeypatch):
    """Count every call into the platform's functions through steps, and record each queue_for_round call."""
    calls: Counter = Counter()
    queues: list[tuple[dict, object]] = []

    def wrap(name):
        real = getattr(steps, name)

        def wrapper(*args, **kwargs):
            calls[name] += 1
            out = real(*args, **kwargs)
            if name == "queue_for_round":
                queues.append(((args, kwargs), out))
            return out

        monkeypatch.setattr(steps, name, wrapper)

    for name in ("attention_from_predictions", "priority_from_attention", "queue_for_round", "select", "reassemble", "apply_slice_revision"):
        wrap(name)
    return calls, queues


def test_the_error_model_rounds_are_the_platforms_round(counted):
    calls, queues = counted
    config = EvidenceConfig(n_cases=30, seeds=(7,), rounds=2, spacing_mm=6.0, workers=1, budget_fraction=0.1,
                            strategies=("attention", "outliers", "uss", "fg_random"))
    result = run_seed(config, 7)
    answered = result.queues
    assert calls["attention_from_predictions"] == 30  # once per case: the ensemble never changes
    assert calls["priority_from_attention"] == 1
    assert calls["queue_for_round"] == 2 * 2 * 2  # per volume strategy and round: sized to the effort, then the queue
    assert calls["select"] == 2 * 2  # per slice strategy and round
    assert calls["reassemble"] == 30 + len(answered)  # the round-0 dataset, then every answered case
    slice_answers = answered[~answered.whole_volume]
    assert calls["apply_slice_revision"] == len(slice_answers) > 0
    # the simulator's queue IS queue_for_round's output: the second call of each (strategy, round) is the queue
    for k, (strategy, r) in enumerate((s, r) for s in ("attention", "outliers") for r in (1, 2)):
        (args, kwargs), out = queues[2 * k + 1]
        assert args[1].strategy == strategy and args[1].count == len(out.entries)
        mine = answered[(answered.strategy == strategy) & (answered["round"] == r)].sort_values("position")
        assert tuple(mine.case_id) == out.case_ids and len(out.case_ids) > 0
        again = platform_queue.queue_for_round(*args, **kwargs)  # the unwrapped platform function, same inputs
        assert again.case_ids == out.case_ids
    # a later round never queues a case an earlier one revised
    for strategy in ("attention", "outliers"):
        rows = answered[answered.strategy == strategy]
        assert not rows.case_id.duplicated().any()
    # equal effort: every strategy spends at most the round's budget
    later = result.rounds[result.rounds["round"] > 0]
    assert (later.effort <= result.budget + 1e-9).all() and (later.effort > 0).all()
    slices = later[later.strategy.isin(["uss", "fg_random"])]
    assert (slices.effort >= result.budget - 1.0).all()  # slice strategies spend all but less than one slice


def test_dataset_improves_only_where_the_oracle_answered():
    config = EvidenceConfig(n_cases=24, seeds=(3,), rounds=1, spacing_mm=6.0, workers=1, budget_fraction=0.15, strategies=("attention",))
    result = run_seed(config, 3)
    dice = result.case_dice.pivot(index="case_id", columns="round", values="dice")
    answered = set(result.queues.case_id)
    assert answered
    assert np.allclose(dice.loc[sorted(answered), 1], 1.0)  # a whole-volume answer is the truth
    unchanged = dice.drop(index=sorted(answered))
    np.testing.assert_array_equal(unchanged[0], unchanged[1])
    r0, r1 = result.rounds.set_index("round").loc[[0, 1], "dataset_dice"]
    assert r1 >= r0
    assert isinstance(result.cases, pd.DataFrame) and result.cases["rank"].is_unique
