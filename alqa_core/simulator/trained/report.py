"""Simulation report: paired tests between strategies, report.md, rounds.csv, Dice-vs-effort plot, catalog rows."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from alqa_core.catalog import Catalog
from alqa_core.evaluation.statistics import PAIRED_COLUMNS, paired_tests
from alqa_core.io.atomic import atomic_path, atomic_write_text
from alqa_core.simulator.trained.loop import SimulationResult


@dataclass(frozen=True)
class ReportPaths:
    report_md: Path
    rounds_csv: Path
    test_metrics_csv: Path
    dice_plot_png: Path


def compare_strategies(result: SimulationResult) -> pd.DataFrame:
    """Paired tests of final-round per-(case, organ) Dice: each strategy vs the first (``mean_diff`` = strategy - first)."""
    m = result.test_metrics
    if m.empty:
        return pd.DataFrame(columns=list(PAIRED_COLUMNS))
    last = int(m["round"].max())
    final = m[m["round"] == last]
    strategies = list(dict.fromkeys(result.rounds["strategy"])) or list(dict.fromkeys(final["strategy"]))
    base_name = strategies[0]
    key = ["case_id", "organ"]
    base = final[final["strategy"] == base_name].set_index(key)["dice"]
    rows = []
    for name in strategies[1:]:
        other = final[final["strategy"] == name].set_index(key)["dice"]
        joined = pd.concat([other.rename("a"), base.rename("b")], axis=1, join="inner")
        test = paired_tests(joined["a"].to_numpy(), joined["b"].to_numpy())
        rows.append({"strategy": name, "baseline": base_name, "round": last, **test.to_record()})
    return pd.DataFrame(rows, columns=list(PAIRED_COLUMNS))


def _fmt(value) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.3f}"
    return str(value)


def _markdown_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "_(no rows)_\n"
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def _plot(result: SimulationResult, target: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure  # an object-oriented figure: no global pyplot state

    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot(1, 1, 1)
    for name, rows in result.rounds.groupby("strategy", sort=False):
        rows = rows.sort_values("round")
        ax.plot(rows["cumulative_effort"], rows["dice"], marker="o", label=name)
    ax.set_xlabel("cumulative effort (slice units)")
    ax.set_ylabel("test Dice (mean over organs)")
    ax.set_title("Dice vs annotation effort")
    ax.grid(True, alpha=0.3)
    ax.legend()
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return target


def write_report(result: SimulationResult, out_dir: str | Path, catalog: Catalog | None = None, partition: str = "simulation") -> ReportPaths:
    """Write report.md, rounds.csv, test_metrics.csv and dice_vs_effort.png (atomically); rows to ``catalog``'s ``simulation`` table."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rounds = result.rounds
    paired = compare_strategies(result)
    rounds_csv = atomic_write_text(out / "rounds.csv", rounds.to_csv(index=False))
    metrics_csv = atomic_write_text(out / "test_metrics.csv", result.test_metrics.to_csv(index=False))
    plot = _plot(result, out / "dice_vs_effort.png")
    shown = rounds[["round", "strategy", "dice", "nsd", "hd95_mm", "effort", "cumulative_effort", "budget",
                    "n_selected_cases", "hard_share", "attention_sensitivity", "attention_precision"]]
    cfg = result.config
    text = (
        "# Campaign simulation\n\n"
        f"Strategies: {', '.join(cfg.strategies)}; {cfg.rounds} rounds at {cfg.budget_per_round:g} effort units each "
        "(a whole volume of K slices costs 1 + (K-1)/3).\n"
        f"Test cases ({len(result.test_case_ids)}, the same for every strategy): {', '.join(result.test_case_ids)}. "
        f"Validation: {', '.join(result.val_case_ids)}. Seed {cfg.seed}. Run time {result.seconds:.1f} s.\n\n"
        "Dice, NSD and HD95 (mm) are means over organs of per-organ means over the test cases (organs present in the ground truth). "
        "`hard_share`: share of the round's selected cases that are hard phantoms. Attention sensitivity/precision: "
        "component level against the pseudo label's error regions, for strategies that compute attention (NaN otherwise).\n\n"
        "## Rounds\n\n" + _markdown_table(shown.sort_values(["round", "strategy"], kind="mergesort")) + "\n"
        "## Paired tests (final round, per case and organ Dice; mean_diff = strategy - baseline)\n\n" + _markdown_table(paired) + "\n"
        f"![Dice vs effort]({plot.name})\n"
    )
    report = atomic_write_text(out / "report.md", text)
    if catalog is not None:
        catalog.write("simulation", partition, rounds.assign(simulation=partition))
    return ReportPaths(report, rounds_csv, metrics_csv, plot)


__all__ = ["ReportPaths", "compare_strategies", "write_report"]
