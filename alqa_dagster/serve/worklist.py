"""The web worklist's API (``/alqa/...``) beside its static page (``/worklist/``): queue, status, leases, verdicts, grades, confirmations.

Plain HTML and JavaScript served by this app, no CDN (hospital networks are
often offline). The page logs in through ``POST /auth/token`` like Slicer
does and sends the bearer token with every call; previews and package zips
are fetched with it too (as blobs), so no file is reachable without a token.
Keys 0, 1 and 2 record a QA grade (``alqa_core.qa.grades``) by the
authenticated annotator; "confirm" writes a confirmation inbox entry; a
revised label goes through the same ``PUT /datastore/label`` as Slicer's.
Each case shows its lease ("held by you until ..", "held by another reader",
never naming them) and the reader's latest submission with the sensor's
verdict; ``/alqa/submissions`` lists them all. The viewer's routes are in
:mod:`.viewer`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel

from alqa_core.annotation.intake.inbox import write_submission
from alqa_core.annotation.intake.verdicts import REFUSED, annotator_submissions, latest_by_case
from alqa_core.annotation.queue.packages import find_package
from alqa_core.annotation.labelled.rounds import round_state
from alqa_core.annotation.intake.worklist import next_item
from alqa_core.errors import AlqaInputError
from alqa_core.qa.grades import GRADE_NAMES, QAGrade, latest_grades, record_grade
from alqa_dagster.serve.auth import annotator, state_of
from alqa_dagster.serve.files import package_zip
from alqa_dagster.serve.ids import BadId, check_case_id, check_package_id, image_ref
from alqa_dagster.serve.leases import lease_view

router = APIRouter(prefix="/alqa")
STATIC = Path(__file__).parent / "static"


class GradeBody(BaseModel):
    grade: int
    round: int | None = None
    note: str = ""


class ConfirmBody(BaseModel):
    package: str
    note: str = ""


def _ids(case_id: str, package_id: str | None = None) -> None:
    try:
        check_case_id(case_id)
        if package_id is not None:
            check_package_id(package_id)
    except BadId as exc:
        raise HTTPException(400, str(exc)) from None


def package_or_404(state, case_id: str, package_id: str):
    """The package version named (ids checked before any path is built); 400 for a bad id, 404 for an unknown one."""
    _ids(case_id, package_id)
    try:
        return find_package(state.layout, case_id, package_id)
    except AlqaInputError as exc:
        raise HTTPException(404, exc.reason) from None


@router.get("/status")
def status(request: Request, who: str = Depends(annotator)) -> dict:
    """The campaign's state: round, answered and pending, convergence."""
    state = state_of(request)
    s = round_state(state.catalog)
    return {
        "campaign": state.settings.campaign.name,
        "annotator": who,
        "auth": state.settings.auth,
        "round": s.round_index,
        "state": s.state,
        "reason": s.record.reason if s.record else "",
        "queued": len(s.queue),
        "answered": len(s.answered),
        "pending": len(s.pending),
        "converged": s.converged,
        "decision": s.decision.reason if s.decision else "",
    }


def own_submissions(state, who: str) -> tuple:
    """``who``'s submissions with their verdicts, read once per worklist (the worklist changes with every inbox or catalog write)."""
    return state.derived(f"submissions:{who}", state.worklist(), lambda _: annotator_submissions(state.catalog, state.layout.inbox, who, state.duckdb()))


def _status(item, lease: dict, who: str) -> str:
    if item.answered:
        return "answered by you" if who in item.answered_by else "answered"
    if item.waiting_by:
        return "waiting for the sensor" if who in item.waiting_by else "waiting for the sensor (another reader's answer)"
    if lease["state"] == "yours":
        return f"held by you until {lease['until']}"
    if lease["state"] == "other":
        return "held by another reader"
    return "open"


@router.get("/worklist")
def worklist(request: Request, who: str = Depends(annotator)) -> dict:
    """The annotator's queue in priority order: organs to fix, status and lease, their latest verdict, latest grade, and which is next.

    Other readers are never named: an answer or a lease of theirs shows as "another reader".
    """
    state = state_of(request)
    work = state.worklist()
    nxt = next_item(work, who, state.held_by())
    grades = latest_grades(state.catalog)
    graded = {} if grades.empty else {str(r.case_id): r for r in grades[grades["round"] == work.round_index].itertuples()}
    latest = latest_by_case(own_submissions(state, who))
    items = []
    for item in work.items:
        g = graded.get(item.case_id)
        lease = lease_view(state.leases.lease_of(item.case_id), who)
        verdict = latest.get(item.case_id)
        if verdict is not None and verdict.package_id and item.package_id and verdict.package_id != item.package_id:
            verdict = None  # an answer to an older package version of the case
        items.append({
            "case_id": item.case_id, "position": item.position, "package_id": item.package_id,
            "image_id": image_ref(state.key, item.case_id, item.package_id).image_id() if item.package_id else item.case_id,
            "organs": list(item.organs), "score": None if np.isnan(item.score) else round(item.score, 4), "status": _status(item, lease, who),
            "open": item.open, "answered": item.answered, "answered_by_you": who in item.answered_by, "waiting_by_you": who in item.waiting_by,
            "lease": lease, "verdict": None if verdict is None else verdict.as_dict(), "refused": verdict is not None and verdict.state == REFUSED,
            "next": nxt is not None and nxt.case_id == item.case_id,
            "grade": None if g is None else int(g.grade), "grade_name": None if g is None else str(g.grade_name),
            "graded_by_you": g is not None and str(g.grader) == who,
        })
    return {"round": work.round_index, "state": work.state, "serving": work.serving, "annotator": who, "items": items}


@router.get("/submissions")
def submissions(request: Request, who: str = Depends(annotator)) -> dict:
    """Every submission of the caller, newest first, with its state (waiting, accepted, accepted with flags, refused, duplicate) and the sensor's reasons."""
    return {"annotator": who, "submissions": [s.as_dict() for s in own_submissions(state_of(request), who)]}


@router.post("/cases/{case_id}/lease")
def take_lease(case_id: str, request: Request, who: str = Depends(annotator)) -> dict:
    """Hold a queued case while editing it (renews the caller's own lease); 409 when another reader holds it."""
    _ids(case_id)
    state = state_of(request)
    if state.worklist().item(case_id) is None:
        raise HTTPException(404, f"case {case_id} is not in the current round's queue")
    lease = state.leases.take(case_id, who)
    if lease is None:
        raise HTTPException(409, f"case {case_id} is held by another reader")
    return {"case_id": case_id, "lease": lease_view(lease, who)}


@router.delete("/cases/{case_id}/lease")
def release_lease(case_id: str, request: Request, who: str = Depends(annotator)) -> dict:
    """Give a held case back to the queue (only its holder can)."""
    _ids(case_id)
    state = state_of(request)
    if not state.leases.release(case_id, who):
        raise HTTPException(409, f"you hold no lease on case {case_id}")
    return {"case_id": case_id, "lease": {"state": "free"}}


@router.get("/cases/{case_id}/{package_id}/preview.png")
def preview(case_id: str, package_id: str, request: Request, who: str = Depends(annotator)):
    """The package's preview: one axial slice, the pseudo label and the attention overlay."""
    package = package_or_404(state_of(request), case_id, package_id)
    return FileResponse(package.folder / "preview.png", media_type="image/png")


@router.get("/cases/{case_id}/{package_id}/package.zip")
def download(case_id: str, package_id: str, request: Request, who: str = Depends(annotator)):
    return package_zip(package_or_404(state_of(request), case_id, package_id))


@router.post("/cases/{case_id}/grade")
def grade(case_id: str, body: GradeBody, request: Request, who: str = Depends(annotator)) -> dict:
    """A QA grade (0 success, 1 usable, 2 failure) by the authenticated annotator, in the current round unless one is named."""
    _ids(case_id)
    state = state_of(request)
    round_index = body.round if body.round is not None else max(state.worklist().round_index, 0)
    if body.grade not in GRADE_NAMES:
        raise HTTPException(400, f"grade must be 0 (success), 1 (usable) or 2 (failure), got {body.grade}")
    try:
        g = QAGrade(case_id, round_index, body.grade, who, note=body.note)
    except AlqaInputError as exc:
        raise HTTPException(400, exc.reason) from None
    record_grade(state.catalog, g)
    return {"case_id": case_id, "round": g.round, "grade": g.grade, "grade_name": g.grade_name, "grader": who, "graded_at": g.graded_at}


@router.post("/cases/{case_id}/confirm")
def confirm(case_id: str, body: ConfirmBody, request: Request, who: str = Depends(annotator)) -> dict:
    """"The pseudo label of this package needs no revision": a confirmation inbox entry by the authenticated annotator."""
    state = state_of(request)
    package = package_or_404(state, case_id, body.package)
    entry = write_submission(state.layout.inbox, case_id, who, None, "confirmed", note=body.note or "alqa serve worklist", package=package.package_id)
    state.leases.release(case_id, who)  # answered: the case goes back to the queue's bookkeeping
    return {"case_id": case_id, "package_id": package.package_id, "entry": entry.name, "annotator": who, "status": "received"}
