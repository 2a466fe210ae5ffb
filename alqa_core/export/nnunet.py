"""``alqa export``: the labelled dataset in nnU-Net v2 raw layout, every case, with provenance and a dataset card.

Writes ``dataset.json``, ``imagesTr/<case>_0000.nii.gz`` (the PHI-free raw
scan), ``labelsTr/<case>.nii.gz`` (the reassembled label), ``provenance.csv``
(each case's source per organ, with who and when for revisions, and the model
round behind the pseudo label), ``organ_summary.csv`` (per organ, the cases
by source) and ``README.md``, the dataset card (:mod:`alqa_core.export.card`).

Every ingested case is exported. If one lacks a reassembled label the export
refuses and names the cases, unless ``partial`` is asked for. The export is
written into a hidden folder and renamed into place when complete, and never
into a folder that holds anything.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from alqa_core.case_errors import CaseCounts, case_counts
from alqa_core.catalog import Catalog
from alqa_core.config.campaign import CampaignConfig
from alqa_core.errors import AlqaInputError
from alqa_core.export.card import dataset_card, organ_summary
from alqa_core.io.atomic import atomic_folder, atomic_write_text, copy_atomic
from alqa_core.workspace import WorkspaceLayout


@dataclass(frozen=True)
class ExportResult:
    root: Path
    cases: tuple[str, ...]
    missing: tuple[str, ...]
    coverage: pd.DataFrame  # per organ: cases by source
    #: the campaign's cases as ``alqa status`` counts them
    counts: CaseCounts | None = None

    def render(self) -> str:
        lines = [f"exported {len(self.cases)} cases to {self.root} (nnU-Net v2 raw layout, provenance.csv, organ_summary.csv, README.md)"]
        if self.missing:
            lines.append(f"left out (no reassembled label, --partial): {', '.join(self.missing)}")
        if self.counts is not None:
            c = self.counts
            lines.append(f"{c.found} cases found: {len(c.ingested)} ingested ({len(self.cases)} exported, {len(c.ingested) - len(self.cases)} left out), "
                         f"{len(c.refused)} refused")
        lines.append("per organ, cases by source:")
        lines += ["  " + line for line in self.coverage.to_string(index=False).splitlines()]
        return "\n".join(lines)


def export_cases(layout: WorkspaceLayout, catalog: Catalog) -> tuple[list[str], list[str]]:
    """(ingested cases with a reassembled label, ingested cases without one)."""
    ingested = case_counts(catalog).ingested
    have = [c for c in ingested if layout.reassembled_label(c).exists()]
    return have, [c for c in ingested if c not in set(have)]


def export_nnunet(layout: WorkspaceLayout, out: Path, config: CampaignConfig, name: str = "Dataset500_alqa", partial: bool = False) -> ExportResult:
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise AlqaInputError(out, "export folder exists and is not empty; alqa never overwrites")
    catalog = Catalog(layout.catalog)
    cases, missing = export_cases(layout, catalog)
    if not cases:
        raise AlqaInputError(layout.root / "reassembled_labels", "no reassembled labels to export; run a round first (alqa round)")
    if missing and not partial:
        raise AlqaInputError(layout.root / "reassembled_labels", f"{len(missing)} ingested case(s) have no reassembled label: {', '.join(missing)} (alqa reassemble, or export --partial)")
    prov = catalog.read("provenance")
    prov = prov[prov.case_id.isin(cases)].sort_values(["case_id", "organ"]) if not prov.empty else prov
    coverage = organ_summary(prov, config.organ_table)
    if out.exists():
        out.rmdir()  # an empty folder the user made: the complete export takes its place
    with atomic_folder(out) as tmp:
        for case_id in cases:
            copy_atomic(layout.raw_scan(case_id), tmp / "imagesTr" / f"{case_id}_0000.nii.gz")
            copy_atomic(layout.reassembled_label(case_id), tmp / "labelsTr" / f"{case_id}.nii.gz")
        meta = {
            "name": name,
            "description": "Exported by alqa: labels reassembled per organ by priority original > revised > pseudo (see README.md)",
            "channel_names": {"0": "CT"},
            "labels": config.organ_table.to_mapping(),
            "numTraining": len(cases),
            "file_ending": ".nii.gz",
        }
        atomic_write_text(tmp / "dataset.json", json.dumps(meta, indent=1))
        atomic_write_text(tmp / "provenance.csv", prov.to_csv(index=False))
        atomic_write_text(tmp / "organ_summary.csv", coverage.to_csv(index=False))
        atomic_write_text(tmp / "README.md", dataset_card(name, config, catalog, cases, missing, prov, coverage))
    return ExportResult(out, tuple(cases), tuple(missing) if partial else (), coverage, case_counts(catalog))


__all__ = ["ExportResult", "export_cases", "export_nnunet"]
