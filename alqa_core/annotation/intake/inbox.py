"""The annotators' inbox: the submission format, writing an entry (``alqa submit``), finding complete entries.

Inbox layout (``<workspace>/inbox/``), documented in the README:

- ``alqa submit`` / ``alqa confirm`` write ``<entry>.nii.gz`` (revisions only)
  and then ``<entry>.json``, each atomically. The JSON sidecar is written last,
  so its presence means the entry is complete::

      {"case_id": "PhLiver_0003", "annotator": "dr_a", "kind": "revised",
       "submitted_at": "2026-11-23T10:00:00+00:00", "emptied_organs": [],
       "annotated_slices": []}

  ``annotated_slices`` (``alqa submit --slices 12,17``) makes it a
  slice-level revision (USS, 004): only those slices (indices k of the scan's
  third voxel axis) were revised, for every organ; the label file's other
  slices are ignored and the work package's pseudo label stands there.

- Dropping a file by hand also works: ``inbox/<annotator>/<case_id>.nii.gz``
  is a revision by ``<annotator>``; it is taken once it has not changed for
  ``settle_seconds`` (so a copy in progress is not read half-way).

Entries are taken oldest first, (mtime, name) ordered. The inbox itself is
the queue: every entry taken leaves it, so the intake takes whatever is still
there and never filters by a cursor (a file whose time is older than the last
one taken, after a slow rename, ``cp -p`` or a skewed NFS clock, is not
skipped). Accepted files are moved into a content-addressed store
(``submissions/<sha256>.nii.gz``) and rejected ones into
``quarantine/<entry>/`` with a ``reason.txt``: nothing a user gave is deleted
or overwritten. Moves never replace an existing file and may be repeated after
a crash half-way (:mod:`alqa_core.annotation.intake.store`).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping

import numpy as np

from alqa_core.annotation.intake.label_files import LABEL_SUFFIXES, label_suffix
from alqa_core.errors import AlqaInputError
from alqa_core.io.atomic import atomic_path, atomic_write_text
from alqa_core.workspace import validate_case_id, validate_package_id

KINDS = ("revised", "confirmed")


@dataclass(frozen=True)
class SubmissionMeta:
    case_id: str
    annotator: str
    kind: str
    submitted_at: str
    emptied_organs: tuple[str, ...] = ()
    note: str = ""
    #: a slice-level revision's slices (third voxel axis of the scan); () = the whole volume
    annotated_slices: tuple[int, ...] = ()
    #: the work package version this answers (``r003-1a2b3c4d5e6f``); "" = the case's newest when taken
    package: str = ""
    #: the label file's values -> organ names (MONAI Label's ``label_info``); empty: names from a
    #: .seg.nrrd's segments, or organ-table values
    segments: tuple[tuple[int, str], ...] = ()

    def to_json(self) -> str:
        d = asdict(self)
        d["emptied_organs"] = list(self.emptied_organs)
        d["annotated_slices"] = list(self.annotated_slices)
        d["segments"] = {str(v): n for v, n in self.segments}
        return json.dumps(d, indent=1)

    @property
    def segment_names(self) -> dict[int, str] | None:
        return dict(self.segments) if self.segments else None


@dataclass(frozen=True)
class InboxEntry:
    """One submission waiting in the inbox."""

    name: str
    meta_path: Path | None
    label_path: Path | None
    mtime_ns: int

    @property
    def cursor_key(self) -> tuple[int, str]:
        return (self.mtime_ns, self.name)


def _has_label_suffix(name: str) -> bool:
    return name.lower().endswith(LABEL_SUFFIXES)


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


def write_submission(
    inbox: Path,
    case_id: str,
    annotator: str,
    label_file: Path | None,
    kind: str = "revised",
    emptied_organs: tuple[str, ...] = (),
    note: str = "",
    submitted_at: str | None = None,
    annotated_slices: tuple[int, ...] = (),
    package: str = "",
    segments: Mapping[int, str] | None = None,
) -> InboxEntry:
    """Put a revision (label file) or confirmation into the inbox atomically (``alqa submit`` and ``alqa serve``).

    The label file is copied as it is (NIfTI, NRRD or a 3D Slicer .seg.nrrd);
    the submissions sensor reads and validates it. ``package`` names the work
    package version answered; ``segments`` maps file values to organ names.
    """
    validate_case_id(case_id, label_file)
    if package:
        validate_package_id(package, label_file)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if (kind == "revised") != (label_file is not None):
        raise ValueError("a revision needs a label file; a confirmation has none")
    if not annotator or "/" in annotator:
        raise ValueError(f"invalid annotator name {annotator!r}")
    inbox = Path(inbox)
    inbox.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    name = f"{stamp}_{case_id}_{uuid.uuid4().hex[:8]}"
    label_path = None
    if label_file is not None:
        label_file = Path(label_file)
        if not label_file.is_file():
            raise AlqaInputError(label_file, "label file does not exist")
        label_path = inbox / f"{name}{label_suffix(label_file)}"
        with atomic_path(label_path) as tmp:
            shutil.copyfile(label_file, tmp)
    if annotated_slices and kind != "revised":
        raise ValueError("only a revision can be slice-level; a confirmation covers the whole volume")
    slices = tuple(sorted({int(k) for k in annotated_slices}))
    names = tuple(sorted((int(v), str(n)) for v, n in (segments or {}).items()))
    meta = SubmissionMeta(case_id, annotator, kind, submitted_at or _now_iso(), tuple(emptied_organs), note, slices, package, names)
    meta_path = atomic_write_text(inbox / f"{name}.json", meta.to_json())
    return InboxEntry(name, meta_path, label_path, meta_path.stat().st_mtime_ns)


def scan_inbox(
    inbox: Path, after: tuple[int, str] | None = None, limit: int | None = None, settle_seconds: float = 10.0, now_ns: int | None = None
) -> list[InboxEntry]:
    """Complete entries after the cursor, oldest first, at most ``limit``.

    One ``os.scandir`` pass per folder: cheap enough for inboxes of many
    thousands of files inside a sensor tick.
    """
    inbox = Path(inbox)
    if not inbox.is_dir():
        return []
    now_ns = now_ns if now_ns is not None else datetime.now(timezone.utc).timestamp() * 1e9
    entries: list[InboxEntry] = []
    names: dict[str, dict[str, os.DirEntry]] = {}
    for de in os.scandir(inbox):
        if de.name.startswith("."):
            continue
        if de.is_dir():
            # hand drops: inbox/<annotator>/<case_id>.nii.gz (or .seg.nrrd, .nrrd, .nii)
            for sub in os.scandir(de.path):
                if sub.name.startswith(".") or not _has_label_suffix(sub.name) or not sub.is_file():
                    continue
                st = sub.stat()
                if now_ns - st.st_mtime_ns < settle_seconds * 1e9:
                    continue
                entries.append(InboxEntry(f"{de.name}/{sub.name}", None, Path(sub.path), st.st_mtime_ns))
            continue
        for suffix in (".json", *LABEL_SUFFIXES):
            if de.name.endswith(suffix):
                names.setdefault(de.name[: -len(suffix)], {})["label" if suffix != ".json" else "json"] = de
                break
    for stem, files in names.items():
        meta = files.get("json")
        if meta is None:
            continue  # the sidecar is written last: not complete yet
        label = files.get("label")
        entries.append(InboxEntry(stem, Path(meta.path), Path(label.path) if label else None, meta.stat().st_mtime_ns))
    entries.sort(key=lambda e: e.cursor_key)
    if after is not None:
        entries = [e for e in entries if e.cursor_key > tuple(after)]
    return entries[:limit] if limit is not None else entries


def read_meta(entry: InboxEntry) -> SubmissionMeta:
    """The entry's metadata: its JSON sidecar, or derived from a hand drop's path."""
    if entry.meta_path is None:
        annotator, fname = entry.name.split("/", 1)
        case_id = fname[: -len(label_suffix(fname))]
        when = datetime.fromtimestamp(entry.mtime_ns / 1e9, timezone.utc).isoformat()
        return SubmissionMeta(case_id, annotator, "revised", when)
    try:
        raw = json.loads(Path(entry.meta_path).read_text())
        meta = SubmissionMeta(
            case_id=str(raw["case_id"]),
            annotator=str(raw["annotator"]),
            kind=str(raw.get("kind", "revised")),
            submitted_at=str(raw.get("submitted_at") or _now_iso()),
            emptied_organs=tuple(raw.get("emptied_organs", ())),
            note=str(raw.get("note", "")),
            annotated_slices=tuple(sorted({int(k) for k in raw.get("annotated_slices") or ()})),
            package=str(raw.get("package") or ""),
            segments=tuple(sorted((int(v), str(n)) for v, n in (raw.get("segments") or {}).items())),
        )
        if meta.package:
            validate_package_id(meta.package, entry.meta_path)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AlqaInputError(entry.meta_path, f"unreadable submission sidecar ({exc})") from exc
    if meta.kind not in KINDS:
        raise AlqaInputError(entry.meta_path, f"kind must be one of {KINDS}, got {meta.kind!r}")
    if meta.annotated_slices and meta.kind != "revised":
        raise AlqaInputError(entry.meta_path, "annotated_slices given for a confirmation; only a revision can be slice-level")
    return meta


def submitted_slices(row) -> tuple[int, ...]:
    """A ``submissions`` catalog row's slice-level revision slices; () for a whole-volume revision or a confirmation."""
    raw = getattr(row, "annotated_slices", "")
    if raw is None or (isinstance(raw, float) and np.isnan(raw)):
        return ()
    return tuple(int(k) for k in str(raw).split(",") if k.strip())


def _row_text(row, name: str) -> str:
    raw = getattr(row, name, "") if not isinstance(row, dict) else row.get(name, "")
    return "" if raw is None or (isinstance(raw, float) and np.isnan(raw)) else str(raw)


def submitted_package(row) -> str:
    """The work package version a ``submissions`` row answers ("" for rows recorded before packages had versions)."""
    return _row_text(row, "package_id")


def submitted_segments(row) -> dict[int, str] | None:
    """A ``submissions`` row's file value -> organ name map (None: names from the file, or organ-table values)."""
    text = _row_text(row, "segments")
    return {int(v): str(n) for v, n in json.loads(text).items()} if text and text != "{}" else None
