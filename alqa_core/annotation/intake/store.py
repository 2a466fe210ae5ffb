"""The immutable submission store, the accepted labels and the quarantine: writes that never overwrite and can be repeated after a crash.

Accepted files are moved into a content-addressed store
(``submissions/<sha256>.nii.gz``) and rejected ones into
``quarantine/<entry>/`` with a ``reason.txt``: nothing a user gave is deleted
or overwritten. Beside the file as handed in, an accepted revision's label is
kept as validation read it (``accepted_labels/<case>/<key>.nii.gz``: organ
values on the case's grid, a slice-level revision merged onto its package's
pseudo label), so nothing downstream reads and maps the submitted file again.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from alqa_core.annotation.intake.inbox import InboxEntry
from alqa_core.annotation.intake.label_files import label_suffix
from alqa_core.annotation.intake.validation import Verdict
from alqa_core.io.atomic import atomic_write_text
from alqa_core.io.nifti import write_label
from alqa_core.workspace import WorkspaceLayout


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


def stored_path(store: Path, sha256: str, label_path: Path | None) -> Path:
    """Where an accepted entry's content lives: its label file (keeping its type's suffix), or the record of a confirmation."""
    return Path(store) / (f"{sha256}{label_suffix(label_path)}" if label_path is not None else f"{sha256}.json")


def store_record(verdict: Verdict, store: Path) -> Path:
    """Write the content-addressed record ``<sha256>.json`` (once; the first entry with that content keeps it)."""
    store = Path(store)
    store.mkdir(parents=True, exist_ok=True)
    target = store / f"{verdict.sha256}.json"
    if not target.exists():
        record = {**json.loads(verdict.meta.to_json()), "flags": list(verdict.flags), "entry": verdict.entry.name}
        atomic_write_text(target, json.dumps(record, indent=1))
    return target


def accepted_label_key(verdict: Verdict) -> str:
    """What an accepted revision's label is made of: the file's content, its case, the package it answers, its slices and segment names."""
    meta = verdict.meta
    made_of = [verdict.sha256, meta.case_id, verdict.package_id, list(meta.annotated_slices), [list(s) for s in meta.segments]]
    return hashlib.sha256(json.dumps(made_of).encode()).hexdigest()[:32]


def store_label(verdict: Verdict, layout: WorkspaceLayout) -> Path:
    """Write an accepted revision's label as validation checked it, once (the same key is the same label); its path."""
    if verdict.label is None or verdict.meta is None:
        raise ValueError(f"{verdict.entry.name}: only an accepted revision has a label to store")
    path = layout.accepted_label(verdict.meta.case_id, accepted_label_key(verdict))
    if not path.exists():
        write_label(path, verdict.label)
    return path


def move_into_store(entry: InboxEntry, sha256: str, store: Path) -> None:
    """Move whatever of ``entry`` is still in the inbox into the store (idempotent).

    The label becomes ``<sha256><suffix>`` (``.nii.gz``, ``.seg.nrrd``...), or
    ``<sha256>.<mtime_ns>.dup<suffix>`` beside an earlier file with the same
    content; the sidecar becomes ``<sha256>.<mtime_ns>.sidecar.json``.
    """
    store = Path(store)
    store.mkdir(parents=True, exist_ok=True)
    label = entry.label_path
    if label is not None and label.exists():
        target = stored_path(store, sha256, label)
        if target.exists() and not os.path.samefile(label, target):
            target = store / f"{sha256}.{entry.mtime_ns}.dup{label_suffix(label)}"
        _move_no_clobber(label, target)
    if entry.meta_path is not None and entry.meta_path.exists():
        _move_no_clobber(entry.meta_path, store / f"{sha256}.{entry.mtime_ns}.sidecar.json")


def store_accepted(verdict: Verdict, store: Path) -> Path:
    """Move an accepted entry into the content-addressed store; returns the stored label or confirmation record."""
    record = store_record(verdict, store)
    move_into_store(verdict.entry, verdict.sha256, store)
    return stored_path(store, verdict.sha256, verdict.entry.label_path) if verdict.entry.label_path is not None else record


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
