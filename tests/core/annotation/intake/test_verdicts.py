"""An annotator's submissions and the sensor's verdicts on them: waiting, accepted, accepted with flags, refused (with reasons)."""

from __future__ import annotations

import numpy as np

from alqa_core.annotation.intake.inbox import write_submission
from alqa_core.annotation.intake.process import process_inbox
from alqa_core.annotation.intake.verdicts import ACCEPTED, FLAGGED, REFUSED, WAITING, annotator_submissions, latest_by_case
from alqa_core.annotation.queue.work_package import write_work_package
from alqa_core.catalog import Catalog
from alqa_core.config.campaign import SubmissionConfig
from alqa_core.io.nifti import write_nifti
from alqa_core.organs import DEFAULT_ORGAN_TABLE as T
from alqa_core.volume import CTVolume, LabelMap
from alqa_core.workspace import WorkspaceLayout

AFF = np.diag([2.0, 2.0, 3.0, 1.0])
SHAPE = (20, 16, 8)


def _revision(tmp_path, name, array, affine=AFF):
    path = tmp_path / name
    write_nifti(path, array, affine)
    return path


def test_each_submission_of_an_annotator_shows_its_state_and_the_sensors_reasons(tmp_path):
    layout, catalog = WorkspaceLayout(tmp_path / "ws"), Catalog(tmp_path / "ws" / "catalog")
    pseudo = np.zeros(SHAPE, np.uint8)
    pseudo[2:8, 2:8, 2:6] = T.value_of("liver")
    write_nifti(layout.raw_scan("c1"), np.zeros(SHAPE, np.int16), AFF)
    write_nifti(layout.raw_scan("c2"), np.zeros(SHAPE, np.int16), AFF)
    package = write_work_package(layout.work_packages("c1"), "c1", 0, CTVolume(np.zeros(SHAPE, np.float32), AFF), LabelMap(pseudo, AFF),
                                 np.zeros((len(T), *SHAPE), np.uint8), ("liver",), T)
    bigger = pseudo.copy()
    bigger[2:18, 2:14, 2:6] = T.value_of("liver")  # 4.7x the liver: accepted, flagged
    inbox = layout.inbox
    refused = write_submission(inbox, "c1", "dr_a", _revision(tmp_path, "bad.nii.gz", np.zeros((20, 16, 9), np.uint8)), package=package.package_id)
    flagged = write_submission(inbox, "c1", "dr_a", _revision(tmp_path, "big.nii.gz", bigger), package=package.package_id)
    fine = write_submission(inbox, "c2", "dr_a", _revision(tmp_path, "ok.nii.gz", pseudo))
    theirs = pseudo.copy()
    theirs[8, 2:8, 2:6] = T.value_of("liver")
    other = write_submission(inbox, "c2", "dr_b", _revision(tmp_path, "b.nii.gz", theirs))
    result = process_inbox(layout, catalog, {"c1", "c2"}, T, SubmissionConfig(), 0, settle_seconds=0.0)
    assert len(result.rejected) == 1 and len(result.accepted) == 3
    waiting = write_submission(inbox, "c1", "dr_a", None, "confirmed", package=package.package_id)

    mine = annotator_submissions(catalog, inbox, "dr_a")
    by_entry = {s.entry: s for s in mine}
    assert set(by_entry) == {refused.name, flagged.name, fine.name, waiting.name} and other.name not in by_entry  # only dr_a's
    assert by_entry[refused.name].state == REFUSED and "not on the case's grid" in by_entry[refused.name].reasons[0]
    assert by_entry[flagged.name].state == FLAGGED and "liver: volume changed" in by_entry[flagged.name].flags[0]
    assert by_entry[fine.name].state == ACCEPTED and by_entry[fine.name].round_index == 0 and not by_entry[fine.name].reasons
    assert by_entry[waiting.name].state == WAITING and not by_entry[waiting.name].decided and by_entry[waiting.name].kind == "confirmed"
    assert mine[0].entry == waiting.name  # newest first
    latest = latest_by_case(mine)
    assert latest["c1"].entry == waiting.name and latest["c2"].entry == fine.name
    assert annotator_submissions(catalog, inbox, "dr_nobody") == ()
    assert by_entry[refused.name].as_dict()["reasons"] == list(by_entry[refused.name].reasons)
