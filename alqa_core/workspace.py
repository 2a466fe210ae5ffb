"""The workspace layout: every file alqa writes has one path derived from (asset, case[, round or version]).

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
#: a work package's version: its round and a content hash (``r003-1a2b3c4d5e6f``)
PACKAGE_ID_RE = re.compile(r"^r(\d{3,6})-([0-9a-f]{12})$")


def validate_package_id(package_id: str, path: str | Path | None = None) -> str:
    """``r<round>-<12 hex>``, so a package id can never escape a folder."""
    if not isinstance(package_id, str) or not PACKAGE_ID_RE.fullmatch(package_id):
        raise AlqaInputError(path, f"invalid work package id {package_id!r}: expected r<round>-<12 hex digits>")
    return package_id


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

    # -- per-case, per-round volumes: every round's ensemble output is kept ------
    def _round(self, asset: str, round_index: int) -> Path:
        return self.root / asset / f"round_{int(round_index):03d}"

    def soft_predictions(self, case_id: str, round_index: int) -> Path:
        """The folder of the case's member predictions in round ``round_index`` (one file per member + members.json)."""
        return self._round("soft_predictions", round_index) / validate_case_id(case_id)

    def soft_prediction(self, case_id: str, member: str, round_index: int) -> Path:
        return self.soft_predictions(case_id, round_index) / f"{_member(member)}.nii.gz"

    def attention_map(self, case_id: str, round_index: int) -> Path:
        return self._round("attention_maps", round_index) / f"{validate_case_id(case_id)}.nii.gz"

    def pseudo_label(self, case_id: str, round_index: int) -> Path:
        """The round's pseudo label of the case (argmax of the ensemble mean), written with its predictions."""
        return self._round("pseudo_labels", round_index) / f"{validate_case_id(case_id)}.nii.gz"

    def revised_label(self, case_id: str) -> Path:
        return self.volume("revised_labels", case_id)

    def reassembled_label(self, case_id: str) -> Path:
        return self.volume("reassembled_labels", case_id)

    def accepted_label(self, case_id: str, key: str) -> Path:
        """An accepted revision as validation read it: organ values on the case's grid (``key``: what made it)."""
        if not re.fullmatch(r"[0-9a-f]{32}", key):
            raise ValueError(f"invalid accepted-label key {key!r}: expected 32 hex digits")
        return self.root / "accepted_labels" / validate_case_id(case_id) / f"{key}.nii.gz"

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

    def latest_checkpoint(self, member: str, round_index: int) -> Path | None:
        """The member's checkpoint of the latest round at or before ``round_index`` (None: never trained)."""
        for r in range(int(round_index), -1, -1):
            if self.checkpoint(member, r).exists():
                return self.checkpoint(member, r)
        return None

    def qa_regressor(self, round_index: int) -> Path:
        return self.root / "checkpoints" / f"round_{int(round_index):03d}" / "qa_regressor.pt"

    def training_set(self, round_index: int) -> Path:
        return self.root / "training_set" / f"round_{int(round_index):03d}"

    def work_packages(self, case_id: str) -> Path:
        """Every work package version of the case, one immutable folder each."""
        return self.root / "work_packages" / validate_case_id(case_id)

    def work_package(self, case_id: str, package_id: str) -> Path:
        return self.work_packages(case_id) / validate_package_id(package_id)

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    @property
    def annotators(self) -> Path:
        """The annotators' credentials for ``alqa serve`` (salted hashes only, never a secret)."""
        return self.root / "annotators"

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
