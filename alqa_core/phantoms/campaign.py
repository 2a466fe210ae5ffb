"""A phantom campaign: several nnU-Net v2 raw datasets with partial labels, plus hidden ground truth.

Layout written by :func:`write_campaign` (the public assembly AbdomenAtlas
started from looks the same: many datasets, each annotating a few organs)::

    root/datasets/Dataset001_PhantomFull/       dataset.json, imagesTr/, labelsTr/, imagesTs/
    root/datasets/Dataset002_PhantomLiver/      labels: liver only
    root/datasets/Dataset003_PhantomKidney/     kidney_right + kidney_left
    root/datasets/Dataset004_PhantomPancreas/   pancreas only
    root/datasets/Dataset005_PhantomUnlabeled/  no labels at all (no labelsTr/)
    root/ground_truth/labelsTr/<case>.nii.gz    full labels of every case
    root/ground_truth/manifest.csv, manifest.json

A dataset's ``labelsTr`` files hold only the organs its ``dataset.json``
names; every other organ is 0 (partial labels). Cases in ``imagesTs`` (the
test split) have no label in the dataset. The platform never reads
``ground_truth/``; it is what a simulated annotator or an evaluation compares
against.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from alqa_core.errors import AlqaInputError
from alqa_core.io.atomic import atomic_write_text
from alqa_core.io.nifti import write_ct, write_label
from alqa_core.organs import DEFAULT_ORGAN_TABLE
from alqa_core.phantoms.anatomy import PHASES
from alqa_core.phantoms.generate import PhantomSpec, generate_case
from alqa_core.phantoms.hard_cases import HARD_KINDS
from alqa_core.volume import LabelMap

CASE_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
DATASET_NAME_PATTERN = re.compile(r"^Dataset\d{3}_[A-Za-z0-9_-]+$")
FILE_ENDING = ".nii.gz"


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset of the campaign: its nnU-Net name, case-id prefix, annotated organs, share of cases."""

    name: str
    case_prefix: str
    organs: tuple[str, ...]
    share: float

    def __post_init__(self):
        object.__setattr__(self, "organs", tuple(self.organs))
        if not DATASET_NAME_PATTERN.match(self.name):
            raise AlqaInputError(None, f"dataset name {self.name!r} is not of the form DatasetNNN_Name")
        if not re.match(r"^[A-Za-z0-9-]{1,40}$", self.case_prefix):
            raise AlqaInputError(None, f"case prefix {self.case_prefix!r} must be 1-40 of [A-Za-z0-9-]")
        unknown = [o for o in self.organs if o not in DEFAULT_ORGAN_TABLE.names]
        if unknown or len(set(self.organs)) != len(self.organs):
            raise AlqaInputError(
                None,
                f"dataset {self.name}: organs {list(self.organs)} must be distinct names of {DEFAULT_ORGAN_TABLE.names}",
            )
        if not self.share >= 0:
            raise AlqaInputError(None, f"dataset {self.name}: share must be >= 0, got {self.share}")

    def labels(self) -> dict[str, int]:
        """``dataset.json`` labels: background plus the annotated organs, organ-table values."""
        kept = [o for o in DEFAULT_ORGAN_TABLE.organs if o.name in self.organs]
        return {"background": 0, **{o.name: o.value for o in kept}}


#: The default campaign: one fully labelled dataset, three partially labelled, one unlabeled.
DEFAULT_DATASETS: tuple[DatasetSpec, ...] = (
    DatasetSpec("Dataset001_PhantomFull", "PhFull", DEFAULT_ORGAN_TABLE.names, 0.2),
    DatasetSpec("Dataset002_PhantomLiver", "PhLiver", ("liver",), 0.2),
    DatasetSpec("Dataset003_PhantomKidney", "PhKidney", ("kidney_right", "kidney_left"), 0.2),
    DatasetSpec("Dataset004_PhantomPancreas", "PhPancreas", ("pancreas",), 0.2),
    DatasetSpec("Dataset005_PhantomUnlabeled", "PhUnlabeled", (), 0.2),
)

#: Contrast phases and how often they occur.
DEFAULT_PHASE_WEIGHTS: tuple[tuple[str, float], ...] = (("portal", 0.6), ("arterial", 0.25), ("pre", 0.15))


@dataclass(frozen=True)
class CampaignSpec:
    n_cases: int = 24
    seed: int = 0
    spacing_mm: tuple[float, float, float] = (3.0, 3.0, 3.0)
    hard_fraction: float = 0.25
    test_fraction: float = 0.2
    datasets: tuple[DatasetSpec, ...] = DEFAULT_DATASETS
    phase_weights: tuple[tuple[str, float], ...] = DEFAULT_PHASE_WEIGHTS
    hard_kinds: tuple[str, ...] = tuple(HARD_KINDS)
    axcodes: str = "RAS"
    noise_hu: float = 15.0

    def __post_init__(self):
        if isinstance(self.n_cases, bool) or not isinstance(self.n_cases, (int, np.integer)) or self.n_cases < 1:
            raise AlqaInputError(None, f"n_cases must be a positive integer, got {self.n_cases!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise AlqaInputError(None, f"campaign seed must be a non-negative integer, got {self.seed!r}")
        for name in ("hard_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise AlqaInputError(None, f"{name} must be in [0, 1], got {value}")
        datasets = tuple(self.datasets)
        if not datasets or sum(d.share for d in datasets) <= 0:
            raise AlqaInputError(None, "a campaign needs at least one dataset with a positive share")
        for attr in ("name", "case_prefix"):
            values = [getattr(d, attr) for d in datasets]
            if len(set(values)) != len(values):
                raise AlqaInputError(None, f"dataset {attr}s must be unique, got {values}")
        object.__setattr__(self, "datasets", datasets)
        phases = tuple((str(p), float(w)) for p, w in self.phase_weights)
        if not phases or any(p not in PHASES or w < 0 for p, w in phases) or sum(w for _, w in phases) <= 0:
            raise AlqaInputError(None, f"phase_weights must weigh phases of {list(PHASES)}, got {self.phase_weights!r}")
        object.__setattr__(self, "phase_weights", phases)
        kinds = tuple(self.hard_kinds)
        if any(k not in HARD_KINDS for k in kinds) or (self.hard_fraction > 0 and not kinds):
            raise AlqaInputError(None, f"hard_kinds must be names of {sorted(HARD_KINDS)}, got {kinds!r}")
        object.__setattr__(self, "hard_kinds", kinds)
        PhantomSpec(0, spacing_mm=self.spacing_mm, axcodes=self.axcodes, noise_hu=self.noise_hu)  # validates
        object.__setattr__(self, "spacing_mm", tuple(float(s) for s in self.spacing_mm))


@dataclass(frozen=True)
class CasePlan:
    case_id: str
    dataset: str
    split: str  # "train" (imagesTr, labelled if the dataset labels anything) or "test" (imagesTs)
    seed: int
    phase: str
    hard_kind: str | None


@dataclass(frozen=True, eq=False)
class CaseRecord:
    """One row of the manifest. Paths are relative to the campaign root."""

    plan: CasePlan
    image_path: str
    label_path: str | None
    ground_truth_path: str
    absent_organs: tuple[str, ...]
    #: (organ, mL) for every organ of the table, in table order
    volume_pairs_ml: tuple[tuple[str, float], ...]

    @property
    def volumes_ml(self) -> dict[str, float]:
        return dict(self.volume_pairs_ml)

    def row(self) -> dict:
        p = self.plan
        out = {
            "case_id": p.case_id,
            "dataset": p.dataset,
            "split": p.split,
            "seed": p.seed,
            "phase": p.phase,
            "hard_kind": p.hard_kind or "",
            "absent_organs": ";".join(self.absent_organs),
            "image_path": self.image_path,
            "label_path": self.label_path or "",
            "ground_truth_path": self.ground_truth_path,
        }
        out.update({f"volume_ml_{name}": round(float(v), 3) for name, v in self.volumes_ml.items()})
        return out


@dataclass(frozen=True, eq=False)
class CampaignLayout:
    root: Path
    dataset_roots: tuple[Path, ...]
    ground_truth_dir: Path
    manifest_path: Path
    manifest_json_path: Path
    cases: tuple[CaseRecord, ...]

    def dataset_root(self, name: str) -> Path:
        for path in self.dataset_roots:
            if path.name == name:
                return path
        raise KeyError(f"no dataset {name!r} in {[p.name for p in self.dataset_roots]}")


def _allocate(n: int, shares: list[float]) -> list[int]:
    """Largest-remainder split of ``n`` items by ``shares``."""
    total = sum(shares)
    exact = [n * s / total for s in shares]
    counts = [int(np.floor(e)) for e in exact]
    order = sorted(range(len(shares)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    return counts


def plan_campaign(spec: CampaignSpec) -> tuple[CasePlan, ...]:
    """Which cases exist, where they go and what they are; deterministic in ``spec``, generates nothing."""
    rng = np.random.default_rng([spec.seed, 101])
    n = spec.n_cases
    seeds = rng.choice(2**31 - 1, size=n, replace=False)
    n_hard = int(round(n * spec.hard_fraction))
    hard_at = np.zeros(n, dtype=bool)
    hard_at[rng.choice(n, size=n_hard, replace=False)] = True
    kinds = [spec.hard_kinds[i] for i in rng.permutation(len(spec.hard_kinds))] if spec.hard_kinds else []
    names, weights = zip(*spec.phase_weights)
    phases = rng.choice(len(names), size=n, p=np.asarray(weights) / np.sum(weights))

    plans, index, hard_count = [], 0, 0
    for ds, count in zip(spec.datasets, _allocate(n, [d.share for d in spec.datasets])):
        n_test = int(round(count * spec.test_fraction))
        test = set(rng.choice(count, size=n_test, replace=False).tolist()) if n_test else set()
        for i in range(count):
            kind = None
            if hard_at[index]:
                kind = kinds[hard_count % len(kinds)]
                hard_count += 1
            plans.append(
                CasePlan(
                    case_id=f"{ds.case_prefix}_{i:04d}",
                    dataset=ds.name,
                    split="test" if i in test else "train",
                    seed=int(seeds[index]),
                    phase=str(names[phases[index]]),
                    hard_kind=kind,
                )
            )
            index += 1
    return tuple(plans)


def _partial_labels(labels: LabelMap, organs: tuple[str, ...]) -> LabelMap:
    """Only ``organs`` kept (others 0), as a dataset annotating just those would have it."""
    lut = np.zeros(256, dtype=np.uint8)
    for name in organs:
        value = DEFAULT_ORGAN_TABLE.value_of(name)
        lut[value] = value
    return LabelMap(lut[np.asarray(labels.array)], labels.affine)


def _write_case(root: Path, plan: CasePlan, organs: tuple[str, ...], spec: CampaignSpec) -> CaseRecord:
    """Generate one case and write its image, partial label (if any) and ground truth."""
    case = generate_case(
        PhantomSpec(
            plan.seed,
            spacing_mm=spec.spacing_mm,
            phase=plan.phase,
            hard_kind=plan.hard_kind,
            axcodes=spec.axcodes,
            noise_hu=spec.noise_hu,
        )
    )
    ds_dir = Path("datasets") / plan.dataset
    image = ds_dir / ("imagesTr" if plan.split == "train" else "imagesTs") / f"{plan.case_id}_0000{FILE_ENDING}"
    write_ct(root / image, case.ct)
    label = None
    if plan.split == "train" and organs:
        label = ds_dir / "labelsTr" / f"{plan.case_id}{FILE_ENDING}"
        write_label(root / label, _partial_labels(case.labels, organs))
    truth = Path("ground_truth") / "labelsTr" / f"{plan.case_id}{FILE_ENDING}"
    write_label(root / truth, case.labels)
    return CaseRecord(
        plan,
        image.as_posix(),
        label.as_posix() if label else None,
        truth.as_posix(),
        case.absent_organs,
        tuple(case.organ_volumes_ml.items()),
    )


def _write_case_star(args) -> CaseRecord:
    return _write_case(*args)


def _dataset_json(ds: DatasetSpec, plans: list[CasePlan], spec: CampaignSpec) -> dict:
    return {
        "name": ds.name,
        "description": (
            f"alqa phantom dataset (campaign seed {spec.seed}); annotates: {', '.join(ds.organs) or 'nothing'}"
        ),
        "channel_names": {"0": "CT"},
        "labels": ds.labels(),
        "numTraining": sum(p.split == "train" for p in plans),
        "numTest": sum(p.split == "test" for p in plans),
        "file_ending": FILE_ENDING,
    }


def _prepare_root(root: Path, spec: CampaignSpec, overwrite: bool) -> None:
    if root.exists() and not root.is_dir():
        raise AlqaInputError(root, "campaign root exists and is not a folder")
    if root.exists() and any(root.iterdir()):
        if not overwrite:
            raise AlqaInputError(
                root, "campaign folder is not empty; pass overwrite=True to replace the campaign in it"
            )
        # Remove only what a campaign writes, never anything else in the folder.
        for path in [root / "datasets" / ds.name for ds in spec.datasets] + [root / "ground_truth"]:
            if path.is_dir():
                shutil.rmtree(path)
    root.mkdir(parents=True, exist_ok=True)


def _manifest_csv(records: list[CaseRecord]) -> str:
    rows = [r.row() for r in records]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_campaign(
    root: str | Path, spec: CampaignSpec = CampaignSpec(), *, overwrite: bool = False, workers: int = 1
) -> CampaignLayout:
    """Generate and write a whole campaign under ``root``.

    ``workers > 1`` generates cases in a process pool; the output is identical
    whatever the number of workers (each case depends only on its own seed).
    Refuses a non-empty ``root`` unless ``overwrite`` (then only the campaign's
    own dataset folders and ``ground_truth/`` are replaced).
    """
    root = Path(root)
    _prepare_root(root, spec, overwrite)
    plans = plan_campaign(spec)
    organs_of = {ds.name: ds.organs for ds in spec.datasets}
    jobs = [(root, p, organs_of[p.dataset], spec) for p in plans]
    if workers > 1 and len(jobs) > 1:
        # spawn: never fork a parent that may hold torch or BLAS threads
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=get_context("spawn")) as pool:
            records = list(pool.map(_write_case_star, jobs, chunksize=max(1, len(jobs) // (4 * workers))))
    else:
        records = [_write_case_star(j) for j in jobs]

    dataset_roots = []
    for ds in spec.datasets:
        ds_root = root / "datasets" / ds.name
        (ds_root / "imagesTr").mkdir(parents=True, exist_ok=True)
        if ds.organs:
            (ds_root / "labelsTr").mkdir(parents=True, exist_ok=True)
        body = _dataset_json(ds, [p for p in plans if p.dataset == ds.name], spec)
        atomic_write_text(ds_root / "dataset.json", json.dumps(body, indent=2) + "\n")
        dataset_roots.append(ds_root)

    gt = root / "ground_truth"
    manifest_csv = gt / "manifest.csv"
    manifest_json = gt / "manifest.json"
    atomic_write_text(manifest_csv, _manifest_csv(records))
    campaign = {**asdict(spec), "datasets": [asdict(d) for d in spec.datasets]}
    payload = {
        "campaign": campaign,
        "organ_table": DEFAULT_ORGAN_TABLE.to_records(),
        "cases": [r.row() for r in records],
    }
    atomic_write_text(manifest_json, json.dumps(payload, indent=2) + "\n")
    return CampaignLayout(root, tuple(dataset_roots), gt, manifest_csv, manifest_json, tuple(records))


__all__ = [
    "CASE_ID_PATTERN",
    "CampaignLayout",
    "CampaignSpec",
    "CasePlan",
    "CaseRecord",
    "DEFAULT_DATASETS",
    "DEFAULT_PHASE_WEIGHTS",
    "DatasetSpec",
    "plan_campaign",
    "write_campaign",
]
