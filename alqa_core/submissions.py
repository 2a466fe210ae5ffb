"""Annotator submissions: the inbox, validation, the immutable store, quarantine.

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
a crash half-way (:func:`move_into_store`, :func:`quarantine_entry`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from alqa_core.errors import AlqaInputError
from alqa_core.io.atomic import atomic_path, atomic_write_text
from alqa_core.io.nifti import read_label
from alqa_core.organs import OrganTable
from alqa_core.volume import Grid, LabelMap
from alqa_core.workspace import validate_case_id

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

    def to_json(self) -> str:
        d = asdict(self)
        d["emptied_organs"] = list(self.emptied_organs)
        d["annotated_slices"] = list(self.annotated_slices)
        return json.dumps(d, indent=1)


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


@dataclass(frozen=True)
class Verdict:
    """The outcome of validating one entry: reasons reject, flags only warn."""

    entry: InboxEntry
    meta: SubmissionMeta | None
    reasons: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    sha256: str = ""
    organ_voxels: dict = field(default_factory=dict)

    @property
    def accepted(self) -> bool:
        return not self.reasons


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
) -> InboxEntry:
    """Put a revision (label file) or confirmation into the inbox atomically (the CLI's side)."""
    validate_case_id(case_id, label_file)
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
        label_path = inbox / f"{name}.nii.gz"
        with atomic_path(label_path) as tmp:
            shutil.copyfile(label_file, tmp)
    if annotated_slices and kind != "revised":
        raise ValueError("only a revision can be slice-level; a confirmation covers the whole volume")
    slices = tuple(sorted({int(k) for k in annotated_slices}))
    meta = SubmissionMeta(case_id, annotator, kind, submitted_at or _now_iso(), tuple(emptied_organs), note, slices)
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
            # hand drops: inbox/<annotator>/<case_id>.nii.gz
            for sub in os.scandir(de.path):
                if sub.name.startswith(".") or not sub.name.endswith(".nii.gz") or not sub.is_file():
                    continue
                st = sub.stat()
                if now_ns - st.st_mtime_ns < settle_seconds * 1e9:
                    continue
                entries.append(InboxEntry(f"{de.name}/{sub.name}", None, Path(sub.path), st.st_mtime_ns))
            continue
        for suffix in (".json", ".nii.gz"):
            if de.name.endswith(suffix):
                names.setdefault(de.name[: -len(suffix)], {})[suffix] = de
    for stem, files in names.items():
        meta = files.get(".json")
        if meta is None:
            continue  # the sidecar is written last: not complete yet
        label = files.get(".nii.gz")
        entries.append(InboxEntry(stem, Path(meta.path), Path(label.path) if label else None, meta.stat().st_mtime_ns))
    entries.sort(key=lambda e: e.cursor_key)
    if after is not None:
        entries = [e for e in entries if e.cursor_key > tuple(after)]
    return entries[:limit] if limit is not None else entries


def read_meta(entry: InboxEntry) -> SubmissionMeta:
    """The entry's metadata: its JSON sidecar, or derived from a hand drop's path."""
    if entry.meta_path is None:
        annotator, fname = entry.name.split("/", 1)
        case_id = fname[: -len(".nii.gz")]
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
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AlqaInputError(entry.meta_path, f"unreadable submission sidecar ({exc})") from exc
    if meta.kind not in KINDS:
        raise AlqaInputError(entry.meta_path, f"kind must be one of {KINDS}, got {meta.kind!r}")
    if meta.annotated_slices and meta.kind != "revised":
        raise AlqaInputError(entry.meta_path, "annotated_slices given for a confirmation; only a revision can be slice-level")
    return meta


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _centroid_x_mm(mask: np.ndarray, affine: np.ndarray) -> float:
    idx = np.argwhere(mask).mean(axis=0)
    return float((affine @ np.append(idx, 1.0))[0])


def check_revision(
    label: LabelMap, reference: Grid, pseudo: LabelMap | None, table: OrganTable, emptied_organs=(), volume_change_factor: float = 2.0
) -> tuple[list[str], list[str], dict]:
    """Reasons to reject and flags to raise for a revised label against its case."""
    reasons: list[str] = []
    flags: list[str] = []
    if not label.grid.matches(reference):
        reasons.append(
            f"not on the case's grid: shape {label.shape} vs {reference.shape}, or the affine differs by more than 1e-3 mm"
        )
        return reasons, flags, {}
    arr = np.asarray(label.array)
    values, counts = np.unique(arr, return_counts=True)
    unknown = sorted(int(v) for v in values if v != 0 and int(v) not in table.values)
    if unknown:
        reasons.append(f"label values {unknown} are not in the organ table {list(table.values)}")
    voxels = {table.name_of(int(v)): int(c) for v, c in zip(values, counts) if int(v) in table.values}
    if pseudo is not None:
        pv, pc = np.unique(np.asarray(pseudo.array), return_counts=True)
        before = {table.name_of(int(v)): int(c) for v, c in zip(pv, pc) if int(v) in table.values}
        emptied = sorted(o for o in before if voxels.get(o, 0) == 0 and o not in set(emptied_organs))
        if emptied:
            reasons.append(f"organs {emptied} were emptied without saying so (pass --emptied to confirm)")
        for organ, n_before in before.items():
            n_after = voxels.get(organ, 0)
            if n_after and (n_after > n_before * volume_change_factor or n_after * volume_change_factor < n_before):
                flags.append(f"{organ}: volume changed {n_before} -> {n_after} voxels (more than x{volume_change_factor})")
        if {"kidney_right", "kidney_left"} <= set(voxels) and {"kidney_right", "kidney_left"} <= set(before):
            vr = table.value_of("kidney_right")
            vl = table.value_of("kidney_left")
            swapped_now = _centroid_x_mm(arr == vr, label.affine) < _centroid_x_mm(arr == vl, label.affine)
            swapped_before = _centroid_x_mm(np.asarray(pseudo.array) == vr, pseudo.affine) < _centroid_x_mm(
                np.asarray(pseudo.array) == vl, pseudo.affine
            )
            if swapped_now != swapped_before:
                flags.append("kidney_right/kidney_left look swapped relative to the pseudo label")
    return reasons, flags, voxels


def slice_revision_problem(slices, reference: Grid, pseudo: LabelMap | None) -> str | None:
    """Why a slice-level revision cannot be taken, or None."""
    n = reference.shape[2]
    outside = [k for k in slices if not 0 <= k < n]
    if outside:
        return f"annotated slices {outside} are outside the scan's slices 0..{n - 1}"
    if pseudo is None:
        return "a slice-level revision needs the case's work package (its pseudo label fills the other slices); queue the case first"
    return None


def submitted_slices(row) -> tuple[int, ...]:
    """A ``submissions`` catalog row's slice-level revision slices; () for a whole-volume revision or a confirmation."""
    raw = getattr(row, "annotated_slices", "")
    if raw is None or (isinstance(raw, float) and np.isnan(raw)):
        return ()
    return tuple(int(k) for k in str(raw).split(",") if k.strip())


def apply_slice_revision(base: LabelMap, revised: LabelMap, slices) -> LabelMap:
    """``base`` with the revised label on ``slices`` (third voxel axis) only; neither input is changed."""
    merged = np.array(base.array, copy=True)
    k = np.asarray(list(slices), dtype=int)
    merged[:, :, k] = np.asarray(revised.array)[:, :, k]
    return LabelMap(merged, base.affine)


def validate_entry(
    entry: InboxEntry,
    known_cases: set[str] | frozenset[str],
    reference_of,
    pseudo_of,
    table: OrganTable,
    max_file_mb: float = 2048.0,
    volume_change_factor: float = 2.0,
) -> Verdict:
    """Validate one inbox entry. ``reference_of(case) -> Grid``, ``pseudo_of(case) -> LabelMap | None``."""
    try:
        meta = read_meta(entry)
    except AlqaInputError as exc:
        return Verdict(entry, None, (str(exc),))
    where = entry.label_path or entry.meta_path
    try:
        validate_case_id(meta.case_id, where)
    except AlqaInputError as exc:
        return Verdict(entry, meta, (str(exc),))
    if meta.case_id not in known_cases:
        return Verdict(entry, meta, (f"{where}: case {meta.case_id!r} is not part of this campaign",))
    if meta.kind == "confirmed":
        return Verdict(entry, meta, sha256=hashlib.sha256(entry.meta_path.read_bytes()).hexdigest())
    if entry.label_path is None:
        return Verdict(entry, meta, (f"{where}: a revision needs a label file",))
    size_mb = entry.label_path.stat().st_size / 2**20
    if size_mb > max_file_mb:
        return Verdict(entry, meta, (f"{entry.label_path}: {size_mb:.0f} MB exceeds the {max_file_mb:.0f} MB limit (not read)",))
    try:
        label = read_label(entry.label_path)
    except AlqaInputError as exc:
        return Verdict(entry, meta, (str(exc),))
    reference, pseudo = reference_of(meta.case_id), pseudo_of(meta.case_id)
    if meta.annotated_slices and label.grid.matches(reference):
        problem = slice_revision_problem(meta.annotated_slices, reference, pseudo)
        if problem:
            return Verdict(entry, meta, (f"{entry.label_path}: {problem}",))
        label = apply_slice_revision(pseudo, label, meta.annotated_slices)
    reasons, flags, voxels = check_revision(label, reference, pseudo, table, meta.emptied_organs, volume_change_factor)
    reasons = tuple(f"{entry.label_path}: {r}" for r in reasons)
    return Verdict(entry, meta, reasons, tuple(flags), file_sha256(entry.label_path), voxels)


def _move_no_clobber(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst``, never replacing another file; safe to repeat after a crash half-way.

    Hand-written because neither ``os.replace`` nor ``shutil.move`` refuses to
    overwrite: a hard link fails if ``dst`` exists, and after a crash between
    link and unlink the repeat finds both names on one file and only drops
    ``src``. Where hard links are not supported (some network or FUSE
    filesystems) it falls back to a checked rename.
    """
    try:
        os.link(src, dst)
    except FileExistsError:
        if not os.path.samefile(src, dst):
            raise FileExistsError(f"{dst}: already exists with other content; {src} stays where it is") from None
    except OSError:
        if dst.exists():
            raise FileExistsError(f"{dst}: already exists; {src} stays where it is") from None
        os.replace(src, dst)
        return
    os.unlink(src)


def stored_path(store: Path, sha256: str, kind_has_label: bool) -> Path:
    """Where an accepted entry's content lives: the label, or the record of a confirmation."""
    return Path(store) / (f"{sha256}.nii.gz" if kind_has_label else f"{sha256}.json")


def store_record(verdict: Verdict, store: Path) -> Path:
    """Write the content-addressed record ``<sha256>.json`` (once; the first entry with that content keeps it)."""
    store = Path(store)
    store.mkdir(parents=True, exist_ok=True)
    target = store / f"{verdict.sha256}.json"
    if not target.exists():
        record = {**json.loads(verdict.meta.to_json()), "flags": list(verdict.flags), "entry": verdict.entry.name}
        atomic_write_text(target, json.dumps(record, indent=1))
    return target


def move_into_store(entry: InboxEntry, sha256: str, store: Path) -> None:
    """Move whatever of ``entry`` is still in the inbox into the store (idempotent).

    The label becomes ``<sha256>.nii.gz``, or ``<sha256>.<mtime_ns>.dup.nii.gz``
    beside an earlier file with the same content; the sidecar becomes
    ``<sha256>.<mtime_ns>.sidecar.json``.
    """
    store = Path(store)
    store.mkdir(parents=True, exist_ok=True)
    label = entry.label_path
    if label is not None and label.exists():
        target = store / f"{sha256}.nii.gz"
        if target.exists() and not os.path.samefile(label, target):
            target = store / f"{sha256}.{entry.mtime_ns}.dup.nii.gz"
        _move_no_clobber(label, target)
    if entry.meta_path is not None and entry.meta_path.exists():
        _move_no_clobber(entry.meta_path, store / f"{sha256}.{entry.mtime_ns}.sidecar.json")


def store_accepted(verdict: Verdict, store: Path) -> Path:
    """Move an accepted entry into the content-addressed store; returns the stored label or confirmation record."""
    record = store_record(verdict, store)
    move_into_store(verdict.entry, verdict.sha256, store)
    return record if verdict.entry.label_path is None else stored_path(store, verdict.sha256, True)


def quarantine_folder(entry: InboxEntry, quarantine: Path) -> Path:
    """``quarantine/<entry>/``; a hand drop's name can recur, so its folder also carries the file time."""
    name = entry.name.replace("/", "__")
    return Path(quarantine) / (name if entry.meta_path is not None else f"{name}.{entry.mtime_ns}")


def quarantine_entry(verdict: Verdict, quarantine: Path) -> Path:
    """Move a rejected entry's files into its quarantine folder with ``reason.txt`` (idempotent)."""
    folder = quarantine_folder(verdict.entry, quarantine)
    folder.mkdir(parents=True, exist_ok=True)
    for p in (verdict.entry.label_path, verdict.entry.meta_path):
        if p is not None and p.exists():
            _move_no_clobber(p, folder / p.name)
    atomic_write_text(folder / "reason.txt", "\n".join(verdict.reasons) + "\n")
    return folder
