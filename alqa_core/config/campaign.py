"""The campaign config: one YAML file a user edits, validated on load.

Errors name the file and the field (``training.max_epochs: expected an
integer, got 'ten'``). Relative paths are relative to the config file's
folder. Sections for the core's own configs (``preprocess``, ``training``,
``inference``, ``attention``, ``qa``, ``qa_loss``) are built field by field
from the frozen dataclasses of :mod:`alqa_core.config.sections`, so a config
key is valid exactly when the core knows it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from alqa_core.config.build import build_dataclass
from alqa_core.config.models import SIZES, architectures
from alqa_core.config.sections import AttentionConfig, InferenceConfig, PreprocessConfig, QALossConfig, QARegressorConfig, TrainConfig
from alqa_core.errors import AlqaInputError
from alqa_core.organs import DEFAULT_ORGAN_TABLE, OrganCode, OrganTable, class_map_preset
from alqa_core.workspace import WorkspaceLayout


@dataclass(frozen=True)
class DatasetSource:
    """A dataset in nnU-Net v2 raw layout. Its class map is its dataset.json's
    ``labels``, or the preset its ``"alqa": {"class_map": ...}`` block names."""

    path: Path


@dataclass(frozen=True)
class ArchitectureConfig:
    """A MONAI architecture trained here; ``members`` networks of it, differing only in their seed."""

    name: str
    size: str = "tiny"
    dropout: float = 0.0
    #: networks of this architecture in the ensemble (seeds training.seed + k); Eq. 1's spread needs >= 2 members
    members: int = 1

    @property
    def member_names(self) -> tuple[str, ...]:
        """``unet`` for the first network, ``unet-s1``, ``unet-s2``... for the others (so adding members renames none)."""
        return tuple(self.name if k == 0 else f"{self.name}-s{k}" for k in range(self.members))


@dataclass(frozen=True)
class TrainedMember:
    """One network the campaign trains: its ensemble name, its architecture, and its seed offset."""

    name: str
    arch: ArchitectureConfig
    seed_offset: int


@dataclass(frozen=True)
class ExternalMemberConfig:
    """Predictions the user drops in: ``<folder>/<case>.nii.gz`` (label map or 4D probabilities)."""

    name: str
    #: None = ``<dataset>/predictions/<name>/`` of every dataset
    folder: Path | None = None
    #: a class-map preset, or ``organ_table`` when values already follow the organ table
    class_map: str = "organ_table"


QUEUE_STRATEGIES = ("attention", "outliers")


@dataclass(frozen=True)
class BudgetConfig:
    #: "attention": top of the priority list (003); "outliers": QA failures first (000), then the list
    strategy: str = "attention"
    fraction: float = 0.05
    count: int | None = None
    min_cases: int = 1


@dataclass(frozen=True)
class SubmissionConfig:
    #: larger files are refused from their size alone, before they are opened
    max_file_mb: float = 2048.0
    volume_change_factor: float = 2.0
    #: inbox entries one sensor tick validates (and runs it requests): bounds a tick's time
    max_per_tick: int = 50
    #: a tick takes no further entry once it has spent this many seconds (the rest wait for the next
    #: tick), far inside Dagster's 60 s limit on a sensor evaluation
    max_tick_seconds: float = 20.0


@dataclass(frozen=True)
class BatchConfig:
    #: cases per Dagster run of the per-case steps (ingest, predictions, attention, reassembly): memory is
    #: bounded by one chunk, and each model loads once per chunk
    cases_per_run: int = 50


@dataclass(frozen=True)
class RoundsConfig:
    #: close a queued round by itself after this many hours (unanswered cases go back to the pool); None: never
    timeout_hours: float | None = None
    #: how many times the round sensor launches a round whose run failed before it stops and says so
    max_attempts: int = 3


@dataclass(frozen=True)
class EvaluationConfig:
    #: share of labelled cases held out of training for the evaluation report (stable by case id)
    holdout_fraction: float = 0.2
    #: NSD tolerance, recorded with every result
    nsd_tolerance_mm: float = 2.0


@dataclass(frozen=True)
class CampaignConfig:
    name: str
    workspace_root: Path
    datasets: tuple[DatasetSource, ...]
    organ_table: OrganTable = DEFAULT_ORGAN_TABLE
    architectures: tuple[ArchitectureConfig, ...] = ()
    external_members: tuple[ExternalMemberConfig, ...] = ()
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    training: TrainConfig = field(default_factory=TrainConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    qa: QARegressorConfig = field(default_factory=QARegressorConfig)
    qa_loss: QALossConfig = field(default_factory=QALossConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    submissions: SubmissionConfig = field(default_factory=SubmissionConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    rounds: RoundsConfig = field(default_factory=RoundsConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    source_path: Path | None = None

    @property
    def trained_members(self) -> tuple[TrainedMember, ...]:
        return tuple(TrainedMember(name, a, k) for a in self.architectures for k, name in enumerate(a.member_names))

    @property
    def member_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.trained_members) + tuple(m.name for m in self.external_members)

    def layout(self, root: str | Path | None = None) -> WorkspaceLayout:
        """Where the campaign's files are: ``root`` when given (``ALQA_WORKSPACE``), else its ``workspace_root``; resolved.

        The one rule the CLI, the server and the Dagster resources all follow.
        """
        return WorkspaceLayout(Path(root or self.workspace_root).resolve())


#: keys of an organ_table entry given as a mapping (``value`` required; the rest code the organ for DICOM-SEG)
ORGAN_ENTRY_KEYS = ("value", "code", "meaning", "laterality", "scheme")


def _organ_entry(name: str, entry: Any, source: Path | None) -> tuple[int, OrganCode | None]:
    """``liver: 5`` or ``portal_vein: {value: 10, code: "32764006", meaning: Portal vein[, laterality, scheme]}``."""
    if not isinstance(entry, Mapping):
        return int(entry), None
    unknown = sorted(set(map(str, entry)) - set(ORGAN_ENTRY_KEYS))
    if unknown or "value" not in entry:
        raise AlqaInputError(source, f"organ_table.{name}: expected keys {list(ORGAN_ENTRY_KEYS)} with 'value' required, got {dict(entry)!r}")
    value = int(entry["value"])
    if "code" not in entry and "meaning" not in entry:
        return value, None
    if "code" not in entry or "meaning" not in entry:
        raise AlqaInputError(source, f"organ_table.{name}: give both 'code' and 'meaning' (the SNOMED CT concept), got {dict(entry)!r}")
    try:
        return value, OrganCode(str(entry["code"]), str(entry["meaning"]), entry.get("laterality"), str(entry.get("scheme", "SCT")))
    except ValueError as exc:
        raise AlqaInputError(source, f"organ_table.{name}: {exc}") from exc


def _organ_table(value: Any, source: Path | None) -> OrganTable:
    if value in (None, "default"):
        return DEFAULT_ORGAN_TABLE
    if not isinstance(value, Mapping):
        raise AlqaInputError(source, f"organ_table: expected 'default' or a mapping name -> value, got {value!r}")
    try:
        entries = {str(k): _organ_entry(str(k), v, source) for k, v in value.items()}
        return OrganTable.from_mapping({k: v for k, (v, _) in entries.items()}, {k: c for k, (_, c) in entries.items() if c is not None})
    except (TypeError, ValueError) as exc:
        raise AlqaInputError(source, f"organ_table: {exc}") from exc


def parse_campaign(raw: Mapping[str, Any], source: Path | None = None) -> CampaignConfig:
    """Validate a parsed YAML mapping into a :class:`CampaignConfig`."""
    if not isinstance(raw, Mapping):
        raise AlqaInputError(source, "campaign config must be a YAML mapping")
    raw = dict(raw)
    table = _organ_table(raw.pop("organ_table", None), source)
    raw.setdefault("workspace_root", "./alqa_workspace")
    # the core's sections (preprocess, training, ...) are typed fields, built field by field too
    cfg = build_dataclass(CampaignConfig, raw, "", source)
    cfg = dataclasses.replace(cfg, organ_table=table, source_path=source)
    _validate(cfg, source)
    return cfg


def _validate(cfg: CampaignConfig, source: Path | None) -> None:
    if not cfg.datasets:
        raise AlqaInputError(source, "datasets: at least one dataset is required")
    if not cfg.architectures and not cfg.external_members:
        raise AlqaInputError(source, "architectures/external_members: the ensemble needs at least one member")
    for i, a in enumerate(cfg.architectures):
        if a.name not in architectures():
            raise AlqaInputError(source, f"architectures[{i}].name: unknown {a.name!r}; known {list(architectures())}")
        if a.size not in SIZES:
            raise AlqaInputError(source, f"architectures[{i}].size: unknown {a.size!r}; known {list(SIZES)}")
        if a.members < 1:
            raise AlqaInputError(source, f"architectures[{i}].members: must be at least 1, got {a.members}")
    names = cfg.member_names
    if len(set(names)) != len(names):
        raise AlqaInputError(source, f"members: names must be unique, got {list(names)}")
    for i, m in enumerate(cfg.external_members):
        if m.class_map != "organ_table":
            try:
                class_map_preset(m.class_map)
            except KeyError as exc:
                raise AlqaInputError(source, f"external_members[{i}].class_map: {exc.args[0]}") from exc
    if cfg.budget.strategy not in QUEUE_STRATEGIES:
        raise AlqaInputError(source, f"budget.strategy: unknown {cfg.budget.strategy!r}; known {list(QUEUE_STRATEGIES)}")
    if cfg.submissions.max_per_tick < 1:
        raise AlqaInputError(source, f"submissions.max_per_tick: must be at least 1, got {cfg.submissions.max_per_tick}")
    if not cfg.submissions.max_tick_seconds > 0:
        raise AlqaInputError(source, f"submissions.max_tick_seconds: must be > 0 seconds, got {cfg.submissions.max_tick_seconds}")
    if cfg.batch.cases_per_run < 1:
        raise AlqaInputError(source, f"batch.cases_per_run: must be at least 1, got {cfg.batch.cases_per_run}")
    if cfg.rounds.timeout_hours is not None and cfg.rounds.timeout_hours <= 0:
        raise AlqaInputError(source, f"rounds.timeout_hours: must be > 0 hours (or absent), got {cfg.rounds.timeout_hours}")
    if cfg.rounds.max_attempts < 1:
        raise AlqaInputError(source, f"rounds.max_attempts: must be at least 1, got {cfg.rounds.max_attempts}")
    if not 0 < cfg.budget.fraction <= 1:
        raise AlqaInputError(source, f"budget.fraction: must be in (0, 1], got {cfg.budget.fraction}")


def load_campaign(path: str | Path) -> CampaignConfig:
    """Read and validate a campaign YAML file."""
    path = Path(path).resolve()
    if not path.is_file():
        raise AlqaInputError(path, "campaign config file does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise AlqaInputError(path, f"not valid YAML ({exc})") from exc
    return parse_campaign(raw or {}, path)
