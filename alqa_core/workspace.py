"""The workspace layout: every file alqa writes has one path derived from (asset, case).

One root folder (``./alqa_workspace`` by default) holds volumes as NIfTI,
the Parquet catalog, checkpoints, work packages and the annotators' inbox.
Nothing here writes; it only names paths, so the Dagster resources and the
CLI agree on where things live.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from alqa_core.errors import AlqaInputError

CASE_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MEMBER_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def validate_case_id(case_id: str, path: str | Path | None = None) -> str:
    """``[A-Za-z0-9_-]{1,64}``, so a case id can never escape a folder."""
    if not isinstance(case_id, str) or not CASE_ID_RE.fullmatch(case_id):
        raise AlqaInputError(path, f"invalid case id {case_id!r}: must match [A-Za-z0-9_-]{{1,64}}")
    return case_id


def _member(name: str) -> str:
    if not MEMBER_RE.fullmatch(name) or name.startswith("."):
        raise ValueError(f"invalid member name {name!r}: must match [A-Za-z0-9_.-]{{1,64}}")
    return name


@dataclass(frozen=True)
class WorkspaceLayout:
    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    # -- per-case volumes ------------------------------------------------
    def volume(self, asset: str, case_id: str) -> Path:
        return self.root / asset / f"{validate_case_id(case_id)}.nii.gz"

    def raw_scan(self, case_id: str) -> Path:
        return self.volume("raw_scans", case_id)

    def original_label(self, case_id: str) -> Path:
        return self.volume("original_labels", case_id)

    def preprocessed(self, case_id: str) -> Path:
        return self.volume("preprocessed_volumes", case_id)

    def grid_record(self, case_id: str) -> Path:
        return self.root / "preprocessed_volumes" / f"{validate_case_id(case_id)}.grid.json"

    def soft_prediction(self, case_id: str, member: str) -> Path:
        return self.root / "soft_predictions" / validate_case_id(case_id) / f"{_member(member)}.nii.gz"

    def attention_map(self, case_id: str) -> Path:
        return self.volume("attention_maps", case_id)

    def revised_label(self, case_id: str) -> Path:
        return self.volume("revised_labels", case_id)

    def reassembled_label(self, case_id: str) -> Path:
        return self.volume("reassembled_labels", case_id)

    def preview(self, asset: str, case_id: str) -> Path:
        return self.root / "previews" / asset / f"{validate_case_id(case_id)}.png"

    def montage(self, case_id: str, size: int) -> Path:
        return self.root / "qa_montages" / f"{validate_case_id(case_id)}_{size}.png"

    # -- campaign-level --------------------------------------------------
    @property
    def catalog(self) -> Path:
        return self.root / "catalog"

    def checkpoint(self, arch: str, round_index: int) -> Path:
        return self.root / "checkpoints" / f"round_{int(round_index):03d}" / f"{_member(arch)}.pt"

    def qa_regressor(self, round_index: int) -> Path:
        return self.root / "checkpoints" / f"round_{int(round_index):03d}" / "qa_regressor.pt"

    def training_set(self, round_index: int) -> Path:
        return self.root / "training_set" / f"round_{int(round_index):03d}"

    def work_package(self, round_index: int, case_id: str) -> Path:
        return self.root / "work_packages" / f"round_{int(round_index):03d}" / validate_case_id(case_id)

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    @property
    def submissions_store(self) -> Path:
        return self.root / "submissions"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    def simulation(self, name: str) -> Path:
        """The campaign simulator's own folder for the run ``name`` (workspace, report)."""
        return self.root / "simulations" / validate_case_id(name)
