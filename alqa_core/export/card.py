"""The dataset card of an export: what the labelled dataset is, how each organ was labelled, by whom, from which rounds.

Modelled on AbdomenAtlas's release notes: the campaign, the rounds, the share
of each organ reviewed by humans (dataset annotators, revisions and
confirmations) against pseudo labels, the model round behind the pseudo
labels, and the annotators.
"""

from __future__ import annotations

from datetime import datetime, timezone
from importlib import metadata
from typing import Sequence

import pandas as pd

from alqa_core.case_errors import open_case_errors
from alqa_core.catalog import Catalog
from alqa_core.config.campaign import CampaignConfig
from alqa_core.organs import OrganTable
from alqa_core.rounds import read_rounds

#: provenance sources, in the order of the reassembly priority (original > revised > confirmed > pseudo)
SOURCES = ("original", "revised", "confirmed", "pseudo")
#: sources a human stands behind
HUMAN = ("original", "revised", "confirmed")


def organ_summary(provenance: pd.DataFrame, table: OrganTable) -> pd.DataFrame:
    """Per organ: the number of cases by source, the share reviewed by humans, and the organ's total volume."""
    rows = []
    for organ in table.names:
        sel = provenance[provenance.organ == organ] if not provenance.empty else provenance
        counts = {s: int((sel.source == s).sum()) if not sel.empty else 0 for s in SOURCES}
        n = sum(counts.values())
        human = sum(counts[s] for s in HUMAN)
        volume = float(sel.volume_ml.sum()) if not sel.empty and "volume_ml" in sel else 0.0
        rows.append({"organ": organ, **counts, "cases": n, "human_share": round(human / n, 4) if n else 0.0, "total_volume_ml": round(volume, 1)})
    return pd.DataFrame(rows, columns=["organ", *SOURCES, "cases", "human_share", "total_volume_ml"])


def _version() -> str:
    try:
        return metadata.version("alqa")
    except metadata.PackageNotFoundError:
        return "unknown"


def _table(frame: pd.DataFrame) -> str:
    """A markdown table (pandas' to_markdown needs the optional tabulate package)."""
    if frame.empty:
        return "(none)\n"
    head = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join("" if pd.isna(v) else str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *body]) + "\n"


def dataset_card(
    name: str, config: CampaignConfig, catalog: Catalog, cases: Sequence[str], missing: Sequence[str], provenance: pd.DataFrame, coverage: pd.DataFrame
) -> str:
    rounds = pd.DataFrame([{"round": r.round_index, "state": r.state, "attempts": r.attempts, "why": r.reason} for r in read_rounds(catalog)])
    subs = catalog.read("submissions")
    accepted = subs[subs.status == "accepted"] if not subs.empty else subs
    annotators = (
        accepted.groupby("annotator").agg(submissions=("submission_id", "count"), revised=("kind", lambda k: int((k == "revised").sum())), confirmed=("kind", lambda k: int((k == "confirmed").sum()))).reset_index()
        if not accepted.empty else pd.DataFrame()
    )
    pseudo = provenance[provenance.source == "pseudo"] if not provenance.empty else provenance
    pseudo_rounds = (
        pseudo.groupby("pseudo_round").case_id.nunique().rename("cases").reset_index().rename(columns={"pseudo_round": "model round"})
        if not pseudo.empty and "pseudo_round" in pseudo else pd.DataFrame()
    )
    errors = open_case_errors(catalog)
    share = coverage[["organ", "cases", "human_share"]].copy()
    share["human_share"] = (share.human_share * 100).round(1).astype(str) + " %"
    members = ", ".join(config.member_names) or "none"
    lines = [
        f"# {name}",
        "",
        f"The labelled dataset of the alqa campaign **{config.name}**: {len(cases)} CT cases with a label for every organ "
        f"of the organ table, exported {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} by alqa {_version()}.",
        "",
        "Each organ of each case comes from one source, by the priority **original > revised > pseudo**: the source "
        "dataset's own label where it annotates the organ; else an annotator's revision (or confirmation of the pseudo "
        "label they were shown); else the pseudo label, the argmax of the ensemble's mean probability. `provenance.csv` "
        "gives the source of every organ of every case, with who and when for human answers; `organ_summary.csv` the counts below.",
        "",
        "## Human review per organ",
        "",
        _table(coverage[["organ", *SOURCES]]),
        _table(share),
        "## Pseudo labels",
        "",
        f"Ensemble members: {members}. The model round behind the pseudo labels (cases with at least one pseudo-labelled organ):",
        "",
        _table(pseudo_rounds),
        "## Rounds",
        "",
        _table(rounds),
        "## Annotators",
        "",
        _table(annotators),
        "## Cases left out",
        "",
        (f"Without a reassembled label (exported with --partial): {', '.join(missing)}.\n" if missing else "")
        + ("Refused (not ingested), with the reason:\n\n" + _table(errors[["case_id", "stage", "file", "reason"]]) if not errors.empty else "None refused.\n"),
        "## Files",
        "",
        "`dataset.json`, `imagesTr/<case>_0000.nii.gz` (CT, no patient identifiers in the header), `labelsTr/<case>.nii.gz`, "
        "`provenance.csv`, `organ_summary.csv`, this `README.md`. The layout is nnU-Net v2's raw dataset format.",
        "",
    ]
    return "\n".join(lines)


__all__ = ["HUMAN", "SOURCES", "dataset_card", "organ_summary"]
