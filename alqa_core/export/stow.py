"""Push DICOM files to a PACS over STOW-RS (dicomweb-client), and check that each was stored.

A PACS may answer HTTP 200 for a file it did not store (Orthanc does for a file
without Study/Series/SOP UIDs: neither the referenced nor the failed list names
it), so success is counted from ``ReferencedSOPSequence``, never assumed from
the status code. One request per file: memory stays one file, and an error
names the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import pydicom

from alqa_core.errors import AlqaInputError
from alqa_core.io.dicomweb import dicomweb_client


@dataclass(frozen=True)
class StowResult:
    url: str
    #: (file, SOPInstanceUID, RetrieveURL or "") per stored file, in the order given
    stored: tuple[tuple[Path, str, str], ...]


def _reason(response: pydicom.Dataset) -> str:
    failed = response.get("FailedSOPSequence") or []
    reasons = [f"{item.get('ReferencedSOPInstanceUID', '?')}: failure reason 0x{int(item.get('FailureReason', 0)):04X}" for item in failed]
    return "; ".join(reasons) or "the PACS neither stored it nor said why (see its log)"


def stow_files(url: str, paths: Iterable[str | Path], headers: Mapping[str, str] | None = None) -> StowResult:
    """STOW-RS every file in ``paths`` to ``url``; raises on the first file the PACS did not store."""
    import requests

    client = dicomweb_client(url, headers)
    stored = []
    for path in map(Path, paths):
        ds = pydicom.dcmread(path)
        sop = str(ds.SOPInstanceUID)
        try:
            response = client.store_instances(datasets=[ds])
        except requests.RequestException as exc:
            raise AlqaInputError(path, f"STOW-RS to {url} failed ({type(exc).__name__}: {exc})") from exc
        refs = {str(item.ReferencedSOPInstanceUID): str(item.get("RetrieveURL", "") or "") for item in response.get("ReferencedSOPSequence") or []}
        if sop not in refs:
            raise AlqaInputError(path, f"STOW-RS to {url}: the PACS did not store SOP instance {sop} ({_reason(response)})")
        stored.append((path, sop, refs[sop]))
    return StowResult(url, tuple(stored))


__all__ = ["StowResult", "stow_files"]
