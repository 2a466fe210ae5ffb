"""The commented campaign template ``alqa init`` writes (and the demo uses)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

TEMPLATE = """\
# alqa campaign config. Relative paths are relative to this file's folder.
# Every key below is optional except `datasets` and at least one ensemble member
# (an architecture or an external member). Unknown keys are an error.
name: {name}

# Where alqa writes everything (volumes, catalog, checkpoints, work packages,
# the annotators' inbox). ALQA_WORKSPACE overrides it.
workspace_root: {workspace_root}

# Datasets in nnU-Net v2 raw layout (dataset.json, imagesTr/, imagesTs/, labelsTr/).
# Partial labels: a dataset annotates exactly the organs its `labels` name. A
# dataset whose label values follow a known release names it in dataset.json:
#   "alqa": {{"class_map": "total" | "totalsegmentator_v1" | "abdomenatlas_1.0"}}
datasets:
{datasets}
# The canonical classes: `default` (TotalSegmentator names, 1 spleen ... 9 pancreas)
# or a mapping name -> value. Known organs carry their SNOMED CT codes (for DICOM-SEG);
# an organ alqa does not know can give its own:
#   portal_vein: {{value: 10, code: "32764006", meaning: Portal vein}}   # laterality: right|left
organ_table: default

# Architectures trained here (MONAI): unet, segresnet, swinunetr, dynunet;
# size `tiny` (tests, CPU demos) or `full`. `members`: networks of the
# architecture, differing in their seed. The ensemble needs at least 2 members
# in all (architectures x members + external members): attention's
# inconsistency (Eq. 1) is the spread across them. Dropout > 0 enables MC dropout.
architectures:
{architectures}
# Predictions from tools you already run (TotalSegmentator, nnU-Net): label maps
# or 4D probabilities named <case>.nii.gz. `folder` defaults to
# <dataset>/predictions/<name>/; class_map is a preset or `organ_table`.
external_members: {external_members}
#  - name: totalseg
#    folder: /data/totalseg_predictions
#    class_map: total
{found_members}
preprocess:
  spacing_mm: [{spacing}, {spacing}, {spacing}]   # 1.5 for real use
  hu_min: -175.0
  hu_max: 275.0

training:
  patch_size_vox: [{patch}, {patch}, {patch}]
  batch_size: 2
  max_epochs: {max_epochs}
  iterations_per_epoch: {iterations}
  lr: {lr}            # null: 1e-3 from scratch, 1e-4 when fine-tuning (000: transfer learning)
  lr_schedule: {lr_schedule}   # constant | poly
  min_delta: 0.001     # early stopping: best validation Dice must rise by more than this
  patience: 10         # ... within this many epochs
  cases_in_memory: 64  # prepared training cases held at a time (a pool sliding over the set each epoch; 5 bytes a voxel each)

inference:
  roi_size_vox: [{roi}, {roi}, {roi}]
  overlap: 0.25
  mc_samples: 0        # > 0: each MC-dropout pass is an ensemble member (needs dropout > 0)

attention:
  inconsistency_threshold: 0.1
  uncertainty_threshold: 0.05
  cleaning_radius_mm: 3.0   # opening in millimetres, so coarse scans keep their attention

budget:
  strategy: attention  # attention (priority list, 003) | outliers (QA failures first, 000)
  fraction: 0.05       # share of cases queued per round (AbdomenAtlas: top 5%)
  min_cases: 1

rounds:
  timeout_hours: null  # close a queued round by itself after this long (unanswered cases go back to the pool)
  max_attempts: 3      # a round whose run failed is relaunched this many times at most

submissions:
  max_file_mb: 2048          # larger files are refused before they are read
  volume_change_factor: 2.0  # flag an organ whose volume changes more than this
  max_per_tick: 50           # inbox entries the submissions sensor validates per tick ...
  max_tick_seconds: 20.0     # ... taking none once it has spent this long (Dagster stops a tick at 60 s)

batch:
  cases_per_run: 50    # cases per Dagster run of the per-case steps: memory is bounded by one chunk

qa:                    # the ResNet-18 QA regressor (001), trained on human grades
  epochs: {qa_epochs}
  num_threads: 1

qa_loss:               # optional (001): a frozen QA regressor as an extra loss on unlabeled cases
  weight: 0.0          # 0 = off; on phantoms 0.1 did not help and 1.0 hurt (benchmarks/bench_qa_loss.py)
  # regressor: ./alqa_workspace/checkpoints/round_000/qa_regressor.pt   (what qa_regressor writes)
  # case_ids: []       # empty: every case outside the round's training set
  # every_n_steps: 4   # cost control: a whole-volume forward+backward per drawn case

evaluation:
  holdout_fraction: {holdout}   # labelled cases never trained on, scored each round
  nsd_tolerance_mm: 2.0
"""


def render_template(
    name: str = "my_campaign",
    workspace_root: str = "./alqa_workspace",
    datasets: tuple[str, ...] = ("/path/to/Dataset001_Example",),
    architectures: tuple[tuple, ...] = (("unet", "tiny", 2),),
    spacing_mm: float = 1.5,
    patch_vox: int = 96,
    roi_vox: int = 96,
    max_epochs: int = 200,
    iterations_per_epoch: int = 100,
    external_members: str = "[]",
    holdout_fraction: float = 0.2,
    lr: float | None = None,
    lr_schedule: str = "constant",
    qa_epochs: int = 200,
    found_members: Sequence[tuple[str, str]] = (),
) -> str:
    """The template; ``found_members`` (name, class map) are prediction folders found in the datasets, offered
    commented out under ``external_members`` (a folder no member names is never read)."""
    ds = "".join(f"  - path: {p}\n" for p in datasets)
    found = "".join(f"#  - name: {n}\n#    class_map: {c}\n" for n, c in found_members)
    if found:
        found = "# Found under the datasets' predictions/, not members until you uncomment them:\n" + found
    arch = "".join(f"  - name: {a[0]}\n    size: {a[1]}\n    members: {a[2] if len(a) > 2 else 1}\n" for a in architectures) or "  []\n"
    return TEMPLATE.format(
        name=name,
        workspace_root=workspace_root,
        datasets=ds,
        architectures=arch,
        spacing=float(spacing_mm),
        patch=patch_vox,
        roi=roi_vox,
        max_epochs=max_epochs,
        iterations=iterations_per_epoch,
        external_members=external_members,
        holdout=holdout_fraction,
        lr="null" if lr is None else repr(float(lr)),
        lr_schedule=lr_schedule,
        qa_epochs=qa_epochs,
        found_members=found,
    )


def write_template(path: Path, **kwargs) -> Path:
    from alqa_core.io.atomic import atomic_write_text

    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path}: already exists; alqa never overwrites a config")
    return atomic_write_text(path, render_template(**kwargs))
