"""``alqa export``: the reassembled dataset in nnU-Net v2 raw layout, ready to train elsewhere.

Writes ``dataset.json``, ``imagesTr/<case>_0000.nii.gz`` (the PHI-free raw
scan), ``labelsTr/<case>.nii.gz`` (the reassembled label) and
``provenance.csv`` (each case's source per organ, with who and when for
revisions). Only cases with a reassembled label are exported; backfill
``reassembled_labels`` over every case first for a complete dataset.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from alqa_core.catalog import Catalog
from alqa_core.errors import AlqaInputError
from alqa_core.io.atomic import atomic_write_text, copy_atomic
from alqa_core.organs import OrganTable
from alqa_core.workspace import WorkspaceLayout


@dataclass(frozen=True)
class ExportResult:
    root: Path
    cases: tuple[str, ...]


def export_nnunet(layout: WorkspaceLayout, out: Path, table: OrganTable, name: str = "Dataset500_alqa") -> ExportResult:
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise AlqaInputError(out, "export folder exists and is not empty; alqa never overwrites")
    cases = sorted(p.name[: -len(".nii.gz")] for p in (layout.root / "reassembled_labels").glob("*.nii.gz") if not p.name.startswith("."))
    if not cases:
        raise AlqaInputError(layout.root / "reassembled_labels", "no reassembled labels to export; materialize reassembled_labels first")
    for case_id in cases:
        copy_atomic(layout.raw_scan(case_id), out / "imagesTr" / f"{case_id}_0000.nii.gz")
        copy_atomic(layout.reassembled_label(case_id), out / "labelsTr" / f"{case_id}.nii.gz")
    meta = {
        "name": name,
        "description": "Exported by alqa: labels reassembled by priority original > revised > pseudo",
        "channel_names": {"0": "CT"},
        "labels": table.to_mapping(),
        "numTraining": len(cases),
        "file_ending": ".nii.gz",
    }
    atomic_write_text(out / "dataset.json", json.dumps(meta, indent=1))
    prov = Catalog(layout.catalog).read("provenance")
    prov = prov[prov.case_id.isin(cases)] if not prov.empty else prov
    atomic_write_text(out / "provenance.csv", prov.to_csv(index=False))
    return ExportResult(out, tuple(cases))
