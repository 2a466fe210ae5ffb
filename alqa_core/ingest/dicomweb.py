"""Pull CT series from a PACS over DICOMweb (QIDO-RS, WADO-RS) into a campaign dataset.

The path for a hospital that does not export files by hand: each pulled
series becomes one case of an nnU-Net v2 raw dataset, a DICOM series folder
``<dataset>/imagesTr/<case>/<SOPInstanceUID>.dcm``, exactly as the PACS
stores it (``transfer-syntax=*``, no transcoding). A new dataset gets a
``dataset.json`` with no organ labels (background only); an existing one keeps
its ``dataset.json`` untouched and gains the new case folders.

The files are the source series, identifiers included, as a hand export
would be: they are inputs that ingest reads (and strips), not an alqa output.
A case folder appears whole or not at all: it is written under a hidden name,
checked with the same reader ingest uses, then renamed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from alqa_core.errors import AlqaInputError
from alqa_core.ingest.dataset import read_dataset
from alqa_core.io.atomic import atomic_path, atomic_write_text
from alqa_core.io.dicom import read_dicom_grid
from alqa_core.io.dicomweb import AS_STORED, dicomweb_client
from alqa_core.workspace import validate_case_id

SERIES_UID_TAG = "0020000E"
MODALITY_TAG = "00080060"


@dataclass(frozen=True)
class PulledCase:
    case_id: str
    folder: Path
    n_instances: int
    shape: tuple[int, int, int]


@dataclass(frozen=True)
class PullResult:
    dataset: Path
    cases: tuple[PulledCase, ...]


def default_case_id(series_uid: str) -> str:
    """``dicom_<12 hex>``: stable per series, and no identifier in the case id (it names files everywhere)."""
    return "dicom_" + hashlib.sha256(series_uid.encode()).hexdigest()[:12]


def _http(url: str, what: str, call):
    import requests

    try:
        return call()
    except requests.RequestException as exc:
        raise AlqaInputError(url, f"{what} failed ({type(exc).__name__}: {exc})") from exc


def _ct_series(client, url: str, study_uid: str) -> list[str]:
    found = _http(url, f"QIDO-RS search for the CT series of study {study_uid}",
                  lambda: client.search_for_series(study_instance_uid=study_uid, search_filters={"Modality": "CT"}))
    uids = sorted({s[SERIES_UID_TAG]["Value"][0] for s in found if s.get(MODALITY_TAG, {}).get("Value", [""])[0] == "CT"})
    if not uids:
        raise AlqaInputError(url, f"study {study_uid} holds no CT series (QIDO-RS found {len(found)} series)")
    return uids


def _new_dataset(dataset: Path) -> None:
    meta = {
        "name": dataset.name,
        "description": "CT series pulled over DICOMweb by alqa (no organ labels)",
        "channel_names": {"0": "CT"},
        "labels": {"background": 0},
        "numTraining": 0,
        "file_ending": ".nii.gz",
    }
    atomic_write_text(dataset / "dataset.json", json.dumps(meta, indent=1))


def _pull_series(client, url: str, study_uid: str, series_uid: str, target: Path) -> PulledCase:
    import requests

    staging = target.parent / f".pull-{target.name}-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    try:
        n = 0
        try:
            # one instance at a time: a long series never sits in memory whole
            for ds in client.iter_series(study_instance_uid=study_uid, series_instance_uid=series_uid, media_types=AS_STORED):
                sop = str(ds.get("SOPInstanceUID", "") or "")
                if not sop or "/" in sop or sop.startswith("."):
                    raise AlqaInputError(url, f"series {series_uid}: an instance without a usable SOPInstanceUID ({sop!r})")
                with atomic_path(staging / f"{sop}.dcm") as tmp:
                    ds.save_as(tmp, enforce_file_format=True)
                n += 1
        except requests.RequestException as exc:
            raise AlqaInputError(url, f"WADO-RS retrieve of series {series_uid} failed ({type(exc).__name__}: {exc})") from exc
        if n == 0:
            raise AlqaInputError(url, f"WADO-RS returned no instances for series {series_uid} of study {study_uid}")
        try:
            grid = read_dicom_grid(staging)  # the checks ingest applies: one CT series, regular slices, sane geometry
        except AlqaInputError as exc:
            raise AlqaInputError(url, f"series {series_uid} of study {study_uid} is not a usable CT volume: {exc.reason}") from exc
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return PulledCase(target.name, target, n, tuple(grid.shape))


def pull_dicomweb(
    url: str,
    study_uid: str,
    dataset: str | Path,
    series_uid: str | None = None,
    case_id: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> PullResult:
    """Pull ``series_uid`` (default: every CT series of the study) into ``dataset``; one case per series.

    ``case_id`` names the case (only with one series); the default is
    :func:`default_case_id`. An existing case folder is an error: nothing is
    overwritten.
    """
    dataset = Path(dataset)
    if dataset.exists():
        read_dataset(dataset)  # an existing folder must already be a readable dataset
    client = dicomweb_client(url, headers)
    series = [series_uid] if series_uid else _ct_series(client, url, study_uid)
    if case_id is not None and len(series) > 1:
        raise AlqaInputError(url, f"--case names one case but study {study_uid} has {len(series)} CT series; pick one with --series")
    names = [validate_case_id(case_id) if case_id else default_case_id(uid) for uid in series]
    images = dataset / "imagesTr"
    for name in names:
        for existing in (images / name, images / f"{name}_0000.nii.gz", dataset / "imagesTs" / name):
            if existing.exists():
                raise AlqaInputError(existing, f"case {name!r} exists; alqa never overwrites (give another --case)")
    if not (dataset / "dataset.json").exists():
        dataset.mkdir(parents=True, exist_ok=True)
        _new_dataset(dataset)
    images.mkdir(parents=True, exist_ok=True)
    pulled = tuple(_pull_series(client, url, study_uid, uid, images / name) for uid, name in zip(series, names))
    return PullResult(dataset, pulled)


__all__ = ["PullResult", "PulledCase", "default_case_id", "pull_dicomweb"]
