"""Data flows once: a revision run reads each accepted submission's label once, in a real ``revision_job`` run.

Every NIfTI or NRRD opened during the run is recorded (``nibabel.load``, ``slicerio.read_segmentation``: the
readers under every label reader alqa has); a read of a file in the submission store or among the accepted
labels is a read of a submission's label. Two answers for one case (a whole-volume revision, then a slice-level
one) must cost two such reads, and the reassembled label must still hold both answers.
"""

from __future__ import annotations

from pathlib import Path

import nibabel
import numpy as np
import slicerio

from alqa_core.annotation.intake.inbox import write_submission
from alqa_core.annotation.labelled.rounds import round_state
from alqa_core.annotation.queue.packages import newest_package
from alqa_core.catalog import Catalog
from alqa_core.config.campaign import load_campaign
from alqa_core.ingest.cases import index_campaign
from alqa_core.io.nifti import read_label, write_nifti
from alqa_core.workspace import WorkspaceLayout
from alqa_dagster.defs.automation import ROUND_ASSETS, submissions_sensor

from .conftest import make_resources
from .test_campaign import INGEST, _materialize, _tick, external_campaign


def _count_label_reads(monkeypatch, folders) -> list[str]:
    """Record the path of every NIfTI/NRRD file read from now on that lies in one of ``folders``."""
    folders = [Path(f).resolve() for f in folders]
    reads: list[str] = []

    def counted(reader):
        def read(path, *args, **kwargs):
            where = Path(str(path)).resolve()
            if any(f in where.parents for f in folders):
                reads.append(str(where))
            return reader(path, *args, **kwargs)

        return read

    monkeypatch.setattr(nibabel, "load", counted(nibabel.load))
    monkeypatch.setattr(slicerio, "read_segmentation", counted(slicerio.read_segmentation))
    return reads


def test_a_revision_run_reads_each_submission_label_once(tmp_path, phantom_campaign, instance, monkeypatch):
    cfg_path = external_campaign(tmp_path, phantom_campaign)
    resources = make_resources(cfg_path)
    keys = sorted(index_campaign(load_campaign(cfg_path)).cases)
    instance.add_dynamic_partitions("cases", keys)
    _materialize(instance, resources, INGEST, keys)
    _materialize(instance, resources, ROUND_ASSETS, keys)
    layout, cat = WorkspaceLayout(tmp_path / "ws"), Catalog(tmp_path / "ws" / "catalog")
    table = load_campaign(cfg_path).organ_table
    case = round_state(cat).queue[0]
    package = newest_package(layout, case)
    truth = read_label(tmp_path / "campaign" / "ground_truth" / "labelsTr" / f"{case}.nii.gz")

    # a whole-volume revision: the ground truth; then a slice-level one that empties slice 1 and nothing else
    whole = tmp_path / "whole.nii.gz"
    write_nifti(whole, np.asarray(truth.array), truth.affine)
    write_submission(layout.inbox, case, "dr_a", whole, emptied_organs=table.names, package=package.package_id, submitted_at="2099-01-01T10:00:00+00:00")
    emptied = np.array(truth.array, copy=True)
    emptied[:, :, 1] = 0
    sliced = tmp_path / "sliced.nii.gz"
    write_nifti(sliced, emptied, truth.affine)
    write_submission(layout.inbox, case, "dr_b", sliced, emptied_organs=table.names, package=package.package_id,
                     submitted_at="2099-01-01T11:00:00+00:00", annotated_slices=(1,))
    result = _tick(submissions_sensor, instance, resources)
    accepted = cat.read("submissions").query("status == 'accepted' and case_id == @case")
    assert len(accepted) == 2 and len(result.run_requests) == 2

    reads = _count_label_reads(monkeypatch, [layout.submissions_store, layout.root / "accepted_labels"])
    request = result.run_requests[-1]
    _materialize(instance, resources, ["revised_labels", "reassembled_labels"], partition=request.partition_key, tags={"dagster/run_key": request.run_key})
    print(f"\nsubmission label reads in one revision run, {len(accepted)} accepted submissions: {len(reads)}")
    for path in reads:
        print(f"  {path}")
    assert len(reads) == len(accepted), reads

    # both answers count: the truth everywhere but slice 1, which the second answer emptied
    label = np.asarray(read_label(layout.reassembled_label(case)).array)
    prov = cat.read("provenance").query("case_id == @case").set_index("organ")
    revised = [o for o in table.names if prov.source[o] == "revised"]
    assert revised and set(prov.annotator[prov.source == "revised"]) == {"dr_b"}
    for organ in revised:
        v = table.value_of(organ)
        expected = np.asarray(truth.array) == v
        expected[:, :, 1] = False
        np.testing.assert_array_equal(label == v, expected)

