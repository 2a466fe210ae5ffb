"""Read an nnU-Net v2 raw dataset into typed records (read-only).

Layout (see DESIGN.md, "Input dataset")::

    <root>/dataset.json              labels, channel_names {"0": "CT"}, file_ending,
                                     optional "alqa": {"class_map": "<preset>"}
    <root>/imagesTr/<case>_0000.nii.gz   or a DICOM series folder imagesTr/<case>/
    <root>/imagesTs/<case>_0000.nii.gz   (same)
    <root>/labelsTr/<case>.nii.gz        partial labels: the organs named in ``labels``
    <root>/predictions/<member>/<case>.nii.gz   external predictions (label map or
                                     4D probabilities), optional member.json {"class_map": ...};
                                     in a campaign, only the folders its members name are read

Nothing here ever writes into the dataset folder. Records are frozen
dataclasses; volumes are loaded on demand by :mod:`alqa_core.ingest.case_files`. An external prediction record is
converted by :func:`alqa_core.ensemble.read_external_prediction`::

    read_external_prediction(record.path, record.class_map, table, reference, record.member)
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from alqa_core.errors import AlqaInputError
from alqa_core.io.nifti import NIFTI_SUFFIXES
from alqa_core.organs import DEFAULT_ORGAN_TABLE, ClassMap, OrganTable, canonical_organ_name, class_map_from_labels, class_map_preset
from alqa_core.volume import LabelMap
from alqa_core.workspace import CASE_ID_RE, validate_case_id

log = logging.getLogger(__name__)

#: Kept for importers; the rule and :func:`validate_case_id` live in :mod:`alqa_core.workspace`.
CASE_ID_PATTERN = CASE_ID_RE
SPLIT_FOLDERS: tuple[tuple[str, str], ...] = (("train", "imagesTr"), ("test", "imagesTs"))
LABELS_FOLDER = "labelsTr"
PREDICTIONS_FOLDER = "predictions"
MEMBER_JSON = "member.json"
CHANNEL_SUFFIX = "_0000"


# --------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class CaseRecord:
    case_id: str
    dataset: str
    split: str  # "train" | "test"
    image_path: Path
    image_format: str  # "nifti" | "dicom"
    label_path: Path | None
    annotated_organs: tuple[str, ...]  # organs this case's label annotates (empty without a label)


@dataclass(frozen=True)
class ExternalPredictionRecord:
    member: str
    case_id: str
    path: Path
    class_map: ClassMap


@dataclass(frozen=True)
class DatasetRecord:
    name: str
    root: Path
    class_map: ClassMap  # the dataset's own numbering, every value it names
    annotated_organs: tuple[str, ...]  # organ-table names, in table order
    unknown_label_names: tuple[str, ...]  # names in ``labels`` the organ table lacks
    file_ending: str
    cases: tuple[CaseRecord, ...]
    predictions: tuple[ExternalPredictionRecord, ...]
    #: the values dataset.json's ``labels`` names (a label file may hold only these)
    named_values: tuple[int, ...] = ()
    #: the class-map preset the dataset declares ("alqa": {"class_map": ...}); its other values are dropped knowingly
    preset: str | None = None
    #: folders under ``predictions/`` that no member of the campaign names: listed, never read
    unlisted_predictions: tuple[Path, ...] = ()

    @property
    def case_ids(self) -> tuple[str, ...]:
        return tuple(c.case_id for c in self.cases)

    def case(self, case_id: str) -> CaseRecord:
        for c in self.cases:
            if c.case_id == case_id:
                return c
        raise KeyError(f"dataset {self.name!r} has no case {case_id!r}")


@dataclass(frozen=True, eq=False)
class CaseLabel:
    """A case's label on its image grid, in organ-table values, and what the remap dropped."""

    label: LabelMap
    annotated_organs: tuple[str, ...]
    unmapped_voxels: int
    unmapped_values: tuple[int, ...]
    reoriented: bool  # the file's axes were flipped/permuted onto the image grid


# --------------------------------------------------------------------------
# dataset.json
# --------------------------------------------------------------------------


def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise AlqaInputError(path, f"missing {what}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise AlqaInputError(path, f"bad JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from exc
    except (UnicodeDecodeError, OSError) as exc:
        raise AlqaInputError(path, f"unreadable {what} ({exc})") from exc
    if not isinstance(data, dict):
        raise AlqaInputError(path, f"{what} must be a JSON object, got {type(data).__name__}")
    return data


def _preset(path: Path, block: object, where: str) -> ClassMap | None:
    if block is None:
        return None
    if not isinstance(block, dict) or not isinstance(block.get("class_map"), str):
        raise AlqaInputError(path, f'{where} must be an object like {{"class_map": "total"}}, got {block!r}')
    try:
        return class_map_preset(block["class_map"])
    except KeyError as exc:
        raise AlqaInputError(path, f"{where}: {exc.args[0]}") from exc


def _labels(path: Path, meta: dict) -> dict[str, int]:
    labels = meta["labels"]
    if not isinstance(labels, dict) or not labels:
        raise AlqaInputError(path, f"'labels' must be a non-empty object of name -> value, got {labels!r}")
    out: dict[str, int] = {}
    for name, value in labels.items():
        if isinstance(value, (list, tuple)):
            raise AlqaInputError(path, f"label {name!r}: region-based labels ({value!r}) are not supported")
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise AlqaInputError(path, f"label {name!r} must have a non-negative integer value, got {value!r}")
        out[name] = value
    if len(set(out.values())) != len(out):
        raise AlqaInputError(path, f"'labels' gives one value to several names: {out}")
    if {canonical_organ_name(n) for n, v in out.items() if v == 0} != {"background"}:
        raise AlqaInputError(path, "'labels' must have \"background\": 0 (as nnU-Net requires)")
    return out


def _check_dataset_json(path: Path, meta: dict) -> str:
    missing = [k for k in ("labels", "channel_names", "file_ending") if k not in meta]
    if missing:
        raise AlqaInputError(path, f"missing required key(s) {missing}")
    channels = meta["channel_names"]
    if not isinstance(channels, dict) or len(channels) != 1:
        raise AlqaInputError(path, f'alqa reads one CT channel: channel_names must be {{"0": "CT"}}, got {channels!r}')
    (key, value), = channels.items()
    if str(key) != "0" or not isinstance(value, str) or value.strip().upper() != "CT":
        raise AlqaInputError(path, f'channel_names must be {{"0": "CT"}}, got {channels!r}')
    ending = meta["file_ending"]
    if ending not in NIFTI_SUFFIXES:
        raise AlqaInputError(path, f"file_ending {ending!r} is not supported; alqa reads NIfTI ({', '.join(NIFTI_SUFFIXES)})")
    return ending


def _annotated_organs(
    path: Path, labels: Mapping[str, int], class_map: ClassMap, table: OrganTable
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    annotated, unknown = set(), []
    for name, value in labels.items():
        organ = canonical_organ_name(name)
        if organ == "background":
            continue
        mapped = class_map.source_to_organ.get(value)
        if mapped is not None and mapped != organ:
            raise AlqaInputError(
                path, f"label {name!r} has value {value}, but class map {class_map.name!r} says {value} is {mapped!r}"
            )
        if organ not in table.names:
            unknown.append(name)
        elif mapped is None:
            raise AlqaInputError(path, f"label {name!r} (value {value}) is not in class map {class_map.name!r}")
        else:
            annotated.add(organ)
    if unknown:
        log.warning("%s: label names not in the organ table (ignored): %s", path, unknown)
    return tuple(n for n in table.names if n in annotated), tuple(unknown)


# --------------------------------------------------------------------------
# Folder scans
# --------------------------------------------------------------------------


def _entries(folder: Path) -> list[Path]:
    """Visible entries of a folder, sorted (hidden files such as .DS_Store are not data)."""
    if not folder.is_dir():
        raise AlqaInputError(folder, "expected a folder")
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _scan_images(root: Path, file_ending: str) -> dict[str, tuple[str, Path, str]]:
    """case_id -> (split, image path, format)."""
    found: dict[str, tuple[str, Path, str]] = {}
    present = [(s, root / f) for s, f in SPLIT_FOLDERS if (root / f).exists()]
    if not present:
        raise AlqaInputError(root, f"no {' or '.join(f for _, f in SPLIT_FOLDERS)} folder")
    suffix = CHANNEL_SUFFIX + file_ending
    for split, folder in present:
        for entry in _entries(folder):
            if entry.is_dir():
                case_id, fmt = entry.name, "dicom"
            elif entry.name.endswith(suffix):
                case_id, fmt = entry.name[: -len(suffix)], "nifti"
            else:
                raise AlqaInputError(
                    entry, f"image file names must be <case>{suffix} (one CT channel) or a DICOM series folder <case>/"
                )
            validate_case_id(case_id, entry)
            if case_id in found:
                raise AlqaInputError(entry, f"case {case_id!r} appears twice (also {found[case_id][1]})")
            found[case_id] = (split, entry, fmt)
    return found


def _scan_labels(root: Path, file_ending: str, images: Mapping[str, tuple[str, Path, str]]) -> dict[str, Path]:
    folder = root / LABELS_FOLDER
    if not folder.exists():
        return {}
    out = {}
    for entry in _entries(folder):
        if not entry.is_file() or not entry.name.endswith(file_ending):
            raise AlqaInputError(entry, f"label files must be <case>{file_ending}")
        case_id = validate_case_id(entry.name[: -len(file_ending)], entry)
        if case_id not in images or images[case_id][0] != "train":
            where = f" (the case is in {images[case_id][1].parent.name}/)" if case_id in images else ""
            raise AlqaInputError(
                entry,
                f"label file without an image: no imagesTr/{case_id}{CHANNEL_SUFFIX}{file_ending} "
                f"or imagesTr/{case_id}/{where}",
            )
        out[case_id] = entry
    return out


def read_prediction_folder(
    folder: str | Path, member: str, class_map: ClassMap, case_ids: Iterable[str] | None = None
) -> tuple[ExternalPredictionRecord, ...]:
    """External predictions ``<folder>/<case>.nii.gz`` of one member (the folder may be anywhere).

    With ``case_ids``, a file for any other case is an error.
    """
    folder = Path(folder)
    validate_case_id(member, folder)  # member names follow the same rule (they name folders and columns)
    if not folder.is_dir():
        raise AlqaInputError(folder, f"prediction folder of member {member!r} does not exist")
    known = None if case_ids is None else set(case_ids)
    records = []
    for entry in _entries(folder):
        if entry.name == MEMBER_JSON:
            continue
        ending = next((s for s in NIFTI_SUFFIXES if entry.name.endswith(s)), None)
        if not entry.is_file() or ending is None:
            raise AlqaInputError(entry, "prediction files must be <case>.nii.gz (a label map or 4D probabilities)")
        case_id = validate_case_id(entry.name[: -len(ending)], entry)
        if known is not None and case_id not in known:
            raise AlqaInputError(entry, f"prediction for case {case_id!r}, which the dataset does not have")
        records.append(ExternalPredictionRecord(member, case_id, entry, class_map))
    return tuple(records)


def prediction_folders(root: str | Path) -> tuple[Path, ...]:
    """The member folders under ``<root>/predictions/`` (none if it has no such folder)."""
    folder = Path(root) / PREDICTIONS_FOLDER
    if not folder.is_dir():
        return ()
    entries = _entries(folder)
    for entry in entries:
        if not entry.is_dir():
            raise AlqaInputError(entry, f"{PREDICTIONS_FOLDER}/ holds one folder per member, not files")
    return tuple(entries)


def unlisted_by_name(folders: Iterable[Iterable[Path]]) -> dict[str, tuple[Path, ...]]:
    """Prediction folders (groups of them, one per dataset) by member name: each name once, with where it is."""
    out: dict[str, list[Path]] = {}
    for group in folders:
        for folder in group:
            out.setdefault(Path(folder).name, []).append(Path(folder))
    return {name: tuple(paths) for name, paths in sorted(out.items())}


def unlisted_prediction_folders(roots: Iterable[str | Path], named: Iterable[str]) -> dict[str, tuple[Path, ...]]:
    """Folders under the datasets' ``predictions/`` that no member in ``named`` names, by name: listings only (no
    dataset.json, no prediction file is read), and a dataset folder that is gone is skipped."""
    named = set(named)
    groups = []
    for root in roots:
        folder = Path(root) / PREDICTIONS_FOLDER
        if folder.is_dir():
            groups.append([p for p in sorted(folder.iterdir()) if p.is_dir() and not p.name.startswith(".") and p.name not in named])
    return unlisted_by_name(groups)


def member_json_class_map(folder: str | Path) -> str | None:
    """The class-map preset a member folder's ``member.json`` names, if it has one."""
    meta_path = Path(folder) / MEMBER_JSON
    if not meta_path.exists():
        return None
    preset = _preset(meta_path, _read_json(meta_path, MEMBER_JSON), MEMBER_JSON)
    return None if preset is None else preset.name


def _scan_predictions(
    root: Path, case_ids: set[str], own: ClassMap, members: Mapping[str, ClassMap] | None, named: set[str]
) -> tuple[tuple[ExternalPredictionRecord, ...], tuple[Path, ...]]:
    """(the predictions of the members read from this dataset, the folders no member names).

    ``members`` None: a dataset read on its own, every folder is a member (class map from its ``member.json``, else
    the dataset's own). Given (a campaign's): exactly those members are read; a folder that ``members`` and
    ``named`` (members read from a folder of their own) do not name is listed, never read.
    """
    records: list[ExternalPredictionRecord] = []
    unlisted: list[Path] = []
    for entry in prediction_folders(root):
        member = entry.name
        if members is not None and member not in members:
            if member not in named:
                unlisted.append(entry)
            continue
        if members is not None:
            class_map = members[member]
        else:
            meta_path = entry / MEMBER_JSON
            block = _read_json(meta_path, MEMBER_JSON) if meta_path.exists() else None
            class_map = _preset(meta_path, block, MEMBER_JSON) or own
        records.extend(read_prediction_folder(entry, member, class_map, case_ids))
    return tuple(sorted(records, key=lambda r: (r.member, r.case_id))), tuple(unlisted)


# --------------------------------------------------------------------------
# Public readers
# --------------------------------------------------------------------------


def read_dataset(
    root: str | Path, table: OrganTable = DEFAULT_ORGAN_TABLE, members: Mapping[str, ClassMap] | None = None,
    named: Iterable[str] = (),
) -> DatasetRecord:
    """Scan one nnU-Net v2 raw dataset (never writing to it) into a :class:`DatasetRecord`.

    ``members`` (a campaign's external members read from ``<root>/predictions/<name>/``, with their class maps): only
    their folders are read; any other folder there that ``named`` (members read from elsewhere) does not name either
    is listed in ``unlisted_predictions`` and never read. None: every folder there is a member.
    """
    root = Path(root)
    if not root.is_dir():
        raise AlqaInputError(root, "dataset folder does not exist" if not root.exists() else "dataset path is not a folder")
    json_path = root / "dataset.json"
    meta = _read_json(json_path, "dataset.json")
    file_ending = _check_dataset_json(json_path, meta)
    labels = _labels(json_path, meta)
    preset = _preset(json_path, meta.get("alqa"), '"alqa" block')
    class_map = preset or class_map_from_labels(root.name, labels)
    annotated, unknown = _annotated_organs(json_path, labels, class_map, table)
    images = _scan_images(root, file_ending)
    label_paths = _scan_labels(root, file_ending, images)
    cases = tuple(
        CaseRecord(
            case_id=case_id,
            dataset=root.name,
            split=split,
            image_path=path,
            image_format=fmt,
            label_path=label_paths.get(case_id),
            annotated_organs=annotated if case_id in label_paths else (),
        )
        for case_id, (split, path, fmt) in sorted(images.items())
    )
    predictions, unlisted = _scan_predictions(root, set(images), class_map, members, set(named))
    values = tuple(sorted(set(labels.values())))
    return DatasetRecord(root.name, root, class_map, annotated, unknown, file_ending, cases, predictions, values, None if preset is None else preset.name, unlisted)


def read_datasets(
    roots: Iterable[str | Path], table: OrganTable = DEFAULT_ORGAN_TABLE, members: Mapping[str, ClassMap] | None = None,
    named: Iterable[str] = (),
) -> tuple[DatasetRecord, ...]:
    """Read several datasets; a case id in two of them is an error (case ids are partition keys)."""
    named = tuple(named)
    records = tuple(read_dataset(r, table, members, named) for r in roots)
    owner: dict[str, DatasetRecord] = {}
    for record in records:
        for case_id in record.case_ids:
            if case_id in owner:
                raise AlqaInputError(
                    record.root,
                    f"case id {case_id!r} is also in dataset {owner[case_id].root}; case ids must be unique across datasets",
                )
            owner[case_id] = record
    return records


def survey_datasets(roots: Iterable[str | Path], table: OrganTable = DEFAULT_ORGAN_TABLE) -> tuple[DatasetRecord, ...]:
    """The datasets a new campaign names (``alqa init``): each must be a dataset that holds images, else AlqaInputError
    naming it. No member is named yet, so every folder under ``predictions/`` is listed (``unlisted_predictions``),
    none is read."""
    records = read_datasets(roots, table, members={})
    for record in records:
        if not record.cases:
            folders = " and ".join(f"{f}/" for _, f in SPLIT_FOLDERS if (record.root / f).is_dir())
            raise AlqaInputError(record.root, f"dataset holds no images ({folders} empty): nothing to annotate")
    return records


__all__ = [
    "CASE_ID_PATTERN",
    "CaseLabel",
    "CaseRecord",
    "DatasetRecord",
    "ExternalPredictionRecord",
    "member_json_class_map",
    "prediction_folders",
    "read_dataset",
    "read_datasets",
    "read_prediction_folder",
    "survey_datasets",
    "unlisted_by_name",
    "unlisted_prediction_folders",
]
