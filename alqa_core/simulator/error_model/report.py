"""The error-model campaign's report: recall against list depth, 003's Table 1 per organ, the labelled dataset per unit of effort.

:func:`write_evidence_report` writes ``report.md`` with the three figures
(``recall_at_depth.png``, ``attention_by_organ.png``,
``dataset_dice_vs_effort.png``), the CSV tables behind them, and the rounds as
rows of the catalog's ``simulation`` table. Every number is a mean ± sd over
seeds (each seed: its own cases and error draws); Table 1 also gives the
mean ± sd over cases, as 003 reports it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from alqa_core.catalog import Catalog
from alqa_core.evaluation.statistics import PAIRED_COLUMNS, paired_tests
from alqa_core.io.atomic import atomic_path, atomic_write_text
from alqa_core.simulator.error_model.evidence import HEADLINE_DEPTH, TUNED_ATTENTION, TUNED_MEASURE, EvidenceResult
from alqa_core.strategies.effort_model import volume_effort

#: depths the recall table shows
TABLE_DEPTHS = (0.01, 0.02, 0.05, 0.1, 0.2)


@dataclass(frozen=True)
class EvidenceReportPaths:
    report_md: Path
    recall_png: Path
    attention_png: Path
    dataset_png: Path
    rounds_csv: Path


def _pm(values) -> str:
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return "nan"
    return f"{v.mean():.3f} ± {v.std(ddof=1):.3f}" if v.size > 1 else f"{v.mean():.3f}"


def _table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "_(no rows)_\n"
    cols = list(frame.columns)
    fmt = lambda v: ("nan" if math.isnan(v) else f"{v:.3g}" if abs(v) < 1e-3 and v != 0 else f"{v:.3f}") if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def _figure(width=6.5, height=4.2):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure  # object-oriented: no global pyplot state

    return Figure(figsize=(width, height))


def _save(fig, target: Path) -> Path:
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return target


def recall_summary(recall: pd.DataFrame, depths=TABLE_DEPTHS) -> pd.DataFrame:
    rows = []
    for d in depths:
        at = recall[np.isclose(recall["depth"], d)]
        rows.append({"depth": f"{100 * d:g}%", **{k: _pm(at[f"recall_{k}"]) for k in ("detectable", "failures", "grade2")}})
    return pd.DataFrame(rows)


def _plot_recall(recall: pd.DataFrame, target: Path) -> Path:
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    for key, label in (("detectable", "detectable failures"), ("failures", "all failures (incl. shared errors)"), ("grade2", "oracle grade 2")):
        g = recall.groupby("depth")[f"recall_{key}"]
        mean, sd = g.mean(), g.std().fillna(0.0)
        ax.plot(100 * mean.index, mean.values, label=label)
        ax.fill_between(100 * mean.index, (mean - sd).values, (mean + sd).values, alpha=0.2)
    ax.plot([0, 100], [0, 1], ls=":", color="grey", label="random order")
    ax.axvline(100 * HEADLINE_DEPTH, ls="--", color="black", lw=0.8)
    ax.set_xlim(0, 30)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("depth of the priority list (% of cases)")
    ax.set_ylabel("recall of failure cases")
    ax.set_title("(a) failures found against list depth (mean ± sd over seeds)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, target)


def attention_table(scores: pd.DataFrame) -> pd.DataFrame:
    """Per organ: mean ± sd over seeds of the per-seed means, and mean ± sd over cases (003 Table 1)."""
    metrics = ("sensitivity", "sensitivity_detectable", "precision")
    voxel = ("voxel_sensitivity", "voxel_precision")
    per_seed = scores.groupby(["organ", "seed"])[list(metrics + voxel)].mean()
    rows = []
    for organ in list(dict.fromkeys(scores["organ"])) + ["mean over organs"]:
        if organ == "mean over organs":
            seeds = per_seed.groupby("seed").mean()
            cases = scores.groupby(["seed", "case_id"])[list(metrics + voxel)].mean()
        else:
            seeds = per_seed.loc[organ]
            cases = scores[scores["organ"] == organ]
        row = {"organ": organ}
        for m in metrics:
            row[f"{m} (seeds)"] = _pm(seeds[m])
            row[f"{m} (cases)"] = _pm(cases[m])
        for m in voxel:
            row[f"{m} (seeds)"] = _pm(seeds[m])
        row["n"] = int(scores[scores["organ"] == organ].shape[0]) if organ != "mean over organs" else int(len(scores))
        rows.append(row)
    return pd.DataFrame(rows)


def _plot_attention(scores: pd.DataFrame, target: Path) -> Path:
    per_seed = scores.groupby(["organ", "seed"])[["sensitivity_detectable", "precision"]].mean()
    organs = list(dict.fromkeys(scores["organ"]))
    fig = _figure(7.5, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(organs))
    for k, (metric, label) in enumerate((("sensitivity_detectable", "sensitivity (detectable errors)"), ("precision", "precision"))):
        g = per_seed[metric].groupby("organ")
        ax.bar(x + (k - 0.5) * 0.38, g.mean().reindex(organs).values, 0.38, yerr=g.std().reindex(organs).fillna(0).values, label=label, capsize=2)
    ax.axhline(0.9, ls="--", color="grey", lw=0.8)
    ax.axhline(0.8, ls=":", color="grey", lw=0.8)
    ax.set_xticks(x, [o.replace("inferior_vena_cava", "ivc") for o in organs], rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_title("(b) component-level attention sensitivity and precision (003 Table 1)")
    ax.legend(fontsize=8)
    return _save(fig, target)


def rounds_summary(rounds: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (strategy, r), g in rounds.groupby(["strategy", "round"], sort=False):
        rows.append({
            "round": int(r), "strategy": strategy, "cumulative effort": _pm(g["cumulative_effort"]), "dataset Dice": _pm(g["dataset_dice"]),
            "organ labels < 0.8": _pm(g["organ_labels_below_0_8"]), "cases with an organ < 0.5": _pm(g["cases_with_failed_organ"]),
            "failure cases still < 0.8": _pm(g["failures_left"]), "cases answered": _pm(g["n_selected_cases"].astype(float)),
        })
    return pd.DataFrame(rows).sort_values(["round"], kind="mergesort")


def _plot_dataset(rounds: pd.DataFrame, target: Path) -> Path:
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    for strategy, g in rounds.groupby("strategy", sort=False):
        s = g.groupby("round")[["cumulative_effort", "dataset_dice"]]
        mean, sd = s.mean(), s.std().fillna(0.0)
        ax.errorbar(mean["cumulative_effort"], mean["dataset_dice"], yerr=sd["dataset_dice"], marker="o", capsize=3, label=strategy)
    ax.set_xlabel("cumulative effort (slice units: a volume of K slices costs 1 + (K-1)/3)")
    ax.set_ylabel("labelled dataset Dice vs ground truth")
    ax.set_title("(c) the labelled dataset per unit of effort (mean ± sd over seeds)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, target)


def dataset_paired_tests(case_dice: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Per round >= 1: each strategy vs ``baseline`` on per-case mean Dice of the labelled dataset, cases of all seeds paired."""
    rows = []
    key = ["seed", "case_id"]
    for r in sorted(int(x) for x in case_dice["round"].unique() if x > 0):
        at = case_dice[case_dice["round"] == r]
        base = at[at["strategy"] == baseline].set_index(key)["dice"]
        for strategy in dict.fromkeys(at["strategy"]):
            if strategy == baseline:
                continue
            other = at[at["strategy"] == strategy].set_index(key)["dice"]
            joined = pd.concat([other.rename("a"), base.rename("b")], axis=1, join="inner")
            rows.append({"strategy": strategy, "baseline": baseline, "round": r, **paired_tests(joined["a"].to_numpy(), joined["b"].to_numpy()).to_record()})
    return pd.DataFrame(rows, columns=list(PAIRED_COLUMNS))


def _provenance(cfg, tuning) -> str:
    if tuning is not None:
        return "tuned in this run on seeds 100-104 only (table at the end)"
    if cfg.attention == TUNED_ATTENTION and cfg.measure == TUNED_MEASURE:
        return ("the error-model defaults, tuned on seeds 100-104 only (`alqa simulate --members error-model --tune`; "
                "`TUNED_ATTENTION` in alqa_core/simulator/error_model/evidence.py)")
    return "set by the caller, not tuned"


def write_evidence_report(
    result: EvidenceResult,
    out_dir: str | Path,
    catalog: Catalog | None = None,
    partition: str = "simulation",
    tuning: pd.DataFrame | None = None,
    command: str = "",
) -> EvidenceReportPaths:
    """report.md, the figures and CSV tables (atomically), and the rounds in ``catalog``'s ``simulation`` table."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = result.config
    rounds, recall, scores = result.frame("rounds"), result.frame("recall"), result.frame("scores")
    cases, case_dice = result.frame("cases"), result.frame("case_dice")
    csv = {name: atomic_write_text(out / f"{name}.csv", frame.to_csv(index=False)) for name, frame in (
        ("rounds", rounds), ("recall", recall), ("attention_scores", scores), ("cases", cases), ("queues", result.frame("queues")))}
    baseline = cfg.strategies[0]
    paired = dataset_paired_tests(case_dice, baseline)
    atomic_write_text(out / "paired_tests.csv", paired.to_csv(index=False))
    if tuning is not None:
        atomic_write_text(out / "tuning.csv", tuning.to_csv(index=False))
    recall_png = _plot_recall(recall, out / "recall_at_depth.png")
    attention_png = _plot_attention(scores, out / "attention_by_organ.png")
    dataset_png = _plot_dataset(rounds, out / "dataset_dice_vs_effort.png")

    per_seed = cases.groupby("seed")
    n_fail = per_seed["failure"].sum()
    n_det = per_seed["detectable_failure"].sum()
    floor = (n_fail - n_det) / n_fail.replace(0, np.nan)
    full_effort = cases.assign(cost=[volume_effort(int(n), cfg.effort_model) for n in cases["n_slices"]]).groupby("seed")["cost"].sum()
    budgets = [s.budget for s in result.seeds]
    em = cfg.error_model
    source = (f"{len(cfg.label_paths)} label file(s) ({', '.join(Path(p).name for p in cfg.label_paths)}, class map `{cfg.class_map}`), cycled over the cases"
              if cfg.label_paths else f"phantom ground truth at {cfg.spacing_mm:g} mm (datasets with partial labels, {cfg.hard_fraction:.0%} hard cases)")
    at5 = recall[np.isclose(recall["depth"], HEADLINE_DEPTH)]
    text = (
        "# Evidence: error-model ensembles, the platform's own round\n\n"
        + (f"Command: `{command}`\n\n" if command else "")
        + f"{cfg.n_cases} cases per seed, seeds {', '.join(map(str, cfg.seeds))}; {source}. "
        f"{em.n_members} error-model members per case; {em.failure_share:.0%} of cases drawn as failures; "
        f"{em.shared_share:.0%} of error events made by every member (confidently: the detection floor). "
        f"Strategies {', '.join(cfg.strategies)}; {cfg.rounds} rounds at {_pm(budgets)} effort units each "
        f"({'fixed' if cfg.budget_per_round else f'{cfg.budget_fraction:.0%} of the pool labelled in full'}). Run time {result.seconds:.0f} s.\n\n"
        "**No training.** The members are made from the ground truth with controlled errors (`alqa_core/simulator/error_model/members.py`), so "
        "the ensemble never changes: a round is the next queue (or slice selection) over the same predictions, answered by the oracle "
        "from the ground truth, and every answered case is reassembled (original > revised > pseudo). Every step is the platform's own "
        "function (`alqa_core/simulator/steps.py`: attention_from_predictions, priority_from_attention, queue_for_round, "
        "strategies.select, apply_slice_revision, reassemble).\n\n"
        f"**Tuning.** Attention settings (cleaning radius {cfg.attention.cleaning_radius_mm:g} mm, uncertainty threshold "
        f"{cfg.attention.uncertainty_threshold:g}, inconsistency threshold {cfg.attention.inconsistency_threshold:g}, smallest component "
        f"{cfg.attention.min_component_ml:g} mL, restore {'on' if cfg.attention.cleaning_restore else 'off'}) and the size measure "
        f"(`{cfg.measure}`): {_provenance(cfg, tuning)}; "
        f"reported here on seeds {', '.join(map(str, cfg.seeds))}.\n\n"
        "## (a) Failures in the top of the priority list\n\n"
        "A failure case is a case drawn as a failure whose major error reached the round-0 labelled dataset (at least half of its "
        "voxels wrong there); it is *detectable* when such an error is not made by every member. `grade2`: cases the oracle grades "
        "a failure (worst open organ's Dice < 0.5). Recall = share of those cases within the top of the list.\n\n"
        f"Recall at {100 * HEADLINE_DEPTH:g}%: **{_pm(at5['recall_detectable'])}** of detectable failures; "
        f"{_pm(at5['recall_failures'])} of all failures. Failure cases per seed: {_pm(n_fail.astype(float))} "
        f"({_pm(n_det.astype(float))} detectable); detection floor (failures every member makes): {_pm(floor)}.\n\n"
        + _table(recall_summary(recall)) + f"\n![recall at depth]({recall_png.name})\n\n"
        "## (b) Attention against the pseudo label's error components (003 Table 1)\n\n"
        "Per case and scored organ (an organ the case's dataset annotates gets no attention and is not scored): error region = pseudo label "
        f"XOR truth; components 26-connected; an error component counts when >= {cfg.min_error_ml:g} mL and is hit when attention "
        "touches it; precision = attention components touching any error / attention components. *Detectable*: error components not "
        "lying wholly in voxels every member gets wrong (there Eq. 1 cannot fire). (seeds): mean ± sd over seeds of each seed's case "
        "mean; (cases): mean ± sd over all cases, as 003 reports. For contrast, voxel level: the share of error voxels attention "
        "covers, and the share of attention voxels that lie on an error. Attention and pseudo-label errors both follow organ "
        "boundaries, so one attention component along a boundary touches the error shell there: the component protocol rewards "
        "broad boundary attention, which the voxel precision shows.\n\n"
        + _table(attention_table(scores)) + f"\n![attention by organ]({attention_png.name})\n\n"
        "## (c) The labelled dataset per round at equal effort\n\n"
        "Dataset Dice: mean over every case and organ (present in the truth or the label) of the reassembled label against the truth. "
        f"Labelling every case in full would cost {_pm(full_effort)} effort units per seed (Dice 1).\n\n"
        + _table(rounds_summary(rounds)) + f"\n![dataset Dice vs effort]({dataset_png.name})\n\n"
        f"Paired tests per round, per-case mean Dice of the labelled dataset, cases of all seeds paired (mean_diff = strategy - {baseline}):\n\n"
        + _table(paired)
        + ("\n## Tuning (seeds 100-104), best settings first\n\n" + _table(tuning.head(12).round(4)) if tuning is not None else "")
    )
    report = atomic_write_text(out / "report.md", text)
    if catalog is not None:
        catalog.write("simulation", partition, rounds.assign(simulation=partition, members="error-model"))
    return EvidenceReportPaths(report, recall_png, attention_png, dataset_png, csv["rounds"])


__all__ = ["EvidenceReportPaths", "attention_table", "dataset_paired_tests", "recall_summary", "rounds_summary", "write_evidence_report"]
