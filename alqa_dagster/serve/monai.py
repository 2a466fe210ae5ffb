"""The MONAI Label endpoints 3D Slicer's module calls, with its request and response shapes.

Request/response shapes follow MONAI Label 0.8.5 (``monailabel/endpoints``,
``monailabel/client/client.py``) and the Slicer module's use of them
(``plugins/slicer/MONAILabel/MONAILabel.py``); the quirks that matter are in
the route docstrings. Every answer is JSON with status 200, except the
files, the refusals (4xx with a ``detail``) and the routes alqa does not
offer (501 with a message Slicer shows as is). "Submit label" becomes one
inbox entry through ``write_submission``; the submissions sensor validates it.
"""

from __future__ import annotations

import json
import time
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import anyio
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from alqa_core.annotation.intake.inbox import write_submission
from alqa_core.annotation.intake.segments import label_values, needs_values, positional_names, segments_from_label_info
from alqa_core.annotation.intake.worklist import next_item
from alqa_core.errors import AlqaInputError
from alqa_core.rounds import IN_FLIGHT, latest_round
from alqa_dagster.serve.auth import annotator, identify, state_of
from alqa_dagster.serve.files import MODEL, image_file_name, infer_response, label_response, package_of, pseudo_label_source
from alqa_dagster.serve.ids import BadId, capability_ok, image_ref, parse_image_id
from alqa_dagster.serve.uploads import BadUpload, TooLarge, drain, label_file_suffix, private_workdir, read_multipart

router = APIRouter()
STRATEGY = "alqa_priority"
#: an oversized upload is answered and the connection closed: the rest of it is never read
CLOSE = {"Connection": "close"}


@lru_cache(maxsize=1)
def _version() -> str:
    try:
        return version("alqa")
    except PackageNotFoundError:
        return "unknown"


def _ref(text: str):
    try:
        return parse_image_id(text)
    except BadId as exc:
        raise HTTPException(400, str(exc)) from None


def _not_offered(what: str) -> HTTPException:
    return HTTPException(501, what)


@router.get("/info/")
def info(request: Request, who: str = Depends(annotator)) -> dict:
    """App info. No top-level ``config`` (Slicer then asks to upgrade the server); every model has ``type`` and ``description``."""
    state = state_of(request)
    cfg = state.settings.campaign
    worklist = state.worklist()
    names = positional_names(cfg.organ_table)
    members = ", ".join(cfg.member_names)
    return {
        "name": f"alqa: {cfg.name}",
        "description": f"alqa active-learning campaign {cfg.name!r}, round {worklist.round_index} ({worklist.state or 'not started'})",
        "version": _version(),
        "labels": list(names),
        "models": {MODEL: {"type": "segmentation", "labels": names, "dimension": 3, "config": {},
                           "description": f"the ensemble's pseudo label (argmax of the mean of {members}) of the case's work package"}},
        "trainers": {},
        "strategies": {STRATEGY: {"description": "alqa's priority list: the queued case with the most attention (where the ensemble is "
                                                 "probably wrong) that nobody has answered yet"}},
        "scoring": {},
        "train_stats": {},
        "datastore": {"total": len(worklist.items), "completed": worklist.completed, "label_tags": {"final": worklist.completed}},
    }


def _round_task(rec) -> dict:
    running = rec.state in IN_FLIGHT
    task = {"id": f"round-{rec.round_index:03d}", "status": "RUNNING" if running else "DONE", "request": {"round": rec.round_index, "state": rec.state},
            "start_ts": (rec.entered_at.get("opened") or rec.updated_at)[:19].replace("T", " ")}
    if not running:
        task["end_ts"] = rec.updated_at[:19].replace("T", " ")
        task["details"] = [f"round {rec.round_index}: {rec.state}: {rec.reason}"]
    return task


@router.get("/train/")
def train_status(request: Request, check_if_running: bool = False, all: bool = False, who: str = Depends(annotator)):
    """Polled by Slicer on every GUI refresh: 404 unless the next round is being computed (trained, predicted, ranked) in Dagster."""
    state = state_of(request)
    work = state.worklist()  # cached: Slicer polls this on every refresh
    if work.round_index < 0 or (check_if_running and work.state not in IN_FLIGHT):
        raise HTTPException(404, "No Train Tasks are currently Running" if check_if_running else "No Train Tasks Found")
    rec = latest_round(state.catalog)
    return [_round_task(rec)] if all else _round_task(rec)


@router.post("/train/")
@router.post("/train/{model}")
def train_start(model: str = "", who: str = Depends(annotator)):
    raise _not_offered("alqa trains in its rounds (Dagster's round_job, started by the round sensor), not on request")


@router.delete("/train/")
def train_stop(who: str = Depends(annotator)):
    return None  # nothing to stop from here (Slicer reads a truthy answer's details[-1])


@router.post("/activelearning/{strategy}")
async def activelearning(strategy: str, request: Request, who: str = Depends(annotator)) -> dict:
    """"Next sample": the next queued case for the authenticated annotator, in priority order; ``{}`` when none is left.

    The body (strategy config + a self-declared ``client_id``) is read but not trusted: the case is chosen for the
    token's annotator. ``name`` is unique per case and package version, ``checksum`` the sha256 of the bytes
    ``/datastore/image`` serves, so Slicer's download cache never hands out a stale file.
    """
    if strategy != STRATEGY:
        raise HTTPException(404, f"unknown strategy {strategy!r}; alqa offers {STRATEGY!r}")
    raw = await request.body()
    try:
        params = json.loads(raw) if raw.strip() else {}
    except ValueError:
        raise HTTPException(400, "the body must be JSON (the strategy's parameters)") from None
    return await anyio.to_thread.run_sync(_next_sample, state_of(request), who, params if isinstance(params, dict) else {})


def _next_sample(state, who: str, params: dict) -> dict:
    item = next_item(state.worklist(), who, state.held_by())
    if item is None or not item.package_id:
        return {}
    package = package_of(state, image_ref(state.key, item.case_id, item.package_id))
    state.hold(item.case_id, who)
    now = int(time.time())
    return {
        "id": image_ref(state.key, item.case_id, item.package_id).image_id(),
        "name": image_file_name(package),
        "checksum": "SHA256:" + state.sha256(package.folder / "image.nii.gz"),
        "PatientID": item.case_id,
        "ts": now,
        "strategy": {STRATEGY: {"ts": now, "client_id": who}},
        "case_id": item.case_id,
        "package_id": item.package_id,
        "round": item.round_index,
        "position": item.position,
        "organs_to_fix": list(item.organs),
        "annotator": who,
        "requested_by": str(params.get("client_id", "")),
    }


@router.get("/datastore/")
def datastore(request: Request, output: str = "stats", who: str = Depends(annotator)):
    """``output=all``: the round's queued cases, each with its original (pseudo) label's ``label_names`` (a dict, as Slicer needs).

    Slicer asks for it on every "Next sample"; the JSON is built once per worklist (at 10,000 cases it is ~5 MB).
    """
    state = state_of(request)
    worklist = state.worklist()
    stats = {"total": len(worklist.items), "completed": worklist.completed, "label_tags": {"final": worklist.completed}}
    if output == "train":
        return []
    if output != "all":
        return stats
    body = state.derived("datastore_all", worklist, lambda work: json.dumps(_datastore_all(state, work, stats)).encode())
    return Response(body, media_type="application/json")


def _datastore_all(state, worklist, stats: dict) -> dict:
    names = positional_names(state.settings.campaign.organ_table)
    objects = {}
    for item in worklist.items:
        if not item.package_id:
            continue
        ref = image_ref(state.key, item.case_id, item.package_id)
        stem = f"{item.case_id}_{item.package_id}"
        labels = {"original": {"ext": ".nii.gz", "info": {"name": f"{stem}_pseudo_label.nii.gz", "model": MODEL, "params": {"label_names": names}}}}
        if item.answered:
            labels["final"] = {"ext": "", "info": {"annotators": list(item.answered_by)}}
        objects[ref.image_id()] = {
            "image": {"ext": ".nii.gz", "info": {"name": f"{stem}.nii.gz", "case_id": item.case_id, "package_id": item.package_id,
                                                 "position": item.position, "organs_to_fix": list(item.organs)}},
            "labels": labels,
        }
    return {"name": state.settings.campaign.name, "description": f"round {worklist.round_index} queue", "images_dir": ".", "labels_dir": "labels",
            "objects": objects, **stats}


@router.get("/datastore/image")
def datastore_image(request: Request, image: str):
    """The package's CT. Slicer fetches it with plain urllib, without the token: the id's capability stands in for it."""
    state = state_of(request)
    ref = _ref(image)
    if identify(request) is None and not (state.settings.auth and capability_ok(state.key, ref)):
        if not state.settings.auth:
            raise HTTPException(403, "alqa serve --no-auth answers loopback clients only")
        raise HTTPException(401, "not authenticated: use the image id /activelearning gave, or a bearer token", headers={"WWW-Authenticate": "Bearer"})
    package = package_of(state, ref)
    if package is None:
        raise HTTPException(404, f"case {ref.case_id} has no work package")
    return FileResponse(package.folder / "image.nii.gz", media_type="application/gzip", filename=image_file_name(package))


@router.get("/datastore/label")
def datastore_label(request: Request, label: str, tag: str = "original", who: str = Depends(annotator)):
    """The package's pseudo label (``tag=original``), values 1..N in ``label_names`` order, with a quoted Content-Disposition filename."""
    if tag != "original":
        raise HTTPException(404, f"alqa serves the original (pseudo) label only, not tag {tag!r}")
    state = state_of(request)
    return label_response(pseudo_label_source(state, _ref(label)), state.settings.campaign.organ_table)


@router.put("/datastore/")
@router.put("/datastore/image")
def upload_image(who: str = Depends(annotator)):
    raise _not_offered("alqa serves the campaign's queued cases only; add scans to a dataset of the campaign instead of uploading them")


@router.put("/datastore/label")
async def save_label(request: Request, image: str, tag: str = "final", who: str = Depends(annotator)):
    """"Submit label": the file ``label`` and ``params`` (JSON: ``label_info`` [{name, idx}]) become one inbox entry by ``who``.

    ``label_info`` maps the file's values to organs by name (never assumed); a ``.seg.nrrd`` names its own
    segments. The optional ``params.emptied_organs`` lists organs removed on purpose. The upload is stopped at
    ``submissions.max_file_mb`` while it streams in; everything else is the sensor's to validate.
    """
    state = state_of(request)
    ref = _ref(image)
    if tag != "final":
        raise HTTPException(400, f"alqa takes final labels only (tag=final), not tag {tag!r}")
    package = await anyio.to_thread.run_sync(package_of, state, ref)
    with private_workdir() as tmp:
        workdir = Path(tmp)
        try:
            upload = await read_multipart(request, "label", state.settings.max_upload_bytes, workdir)
        except TooLarge as exc:
            return JSONResponse({"detail": f"upload refused: {exc} (submissions.max_file_mb = {state.settings.campaign.submissions.max_file_mb:g})"}, 413, headers=CLOSE)
        except BadUpload as exc:
            raise HTTPException(400, str(exc)) from None
        try:
            params = json.loads(upload.fields.get("params") or "{}")
        except ValueError:
            raise HTTPException(400, "params must be a JSON object") from None
        if not isinstance(params, dict):
            raise HTTPException(400, "params must be a JSON object")
        suffix = label_file_suffix(upload.file_name)
        if suffix is None:
            raise HTTPException(415, f"label file {upload.file_name!r}: expected .nii.gz, .nii, .nrrd or .seg.nrrd")
        label_file = upload.file_path.rename(workdir / f"label{suffix}")
        try:
            entry = await anyio.to_thread.run_sync(_write_entry, state, ref.case_id, package.package_id if package else "", who, label_file, suffix, params)
        except AlqaInputError as exc:
            raise HTTPException(400, exc.reason) from None
    state.leases.release(ref.case_id, who)  # answered: the reader's hold on the case ends
    return {"image": image, "label": image, "entry": entry.name, "case_id": ref.case_id, "package_id": package.package_id if package else "",
            "annotator": who, "status": "received",
            "message": f"Received: alqa's submissions sensor validates it on its next tick (inbox entry {entry.name})."}


def _write_entry(state, case_id: str, package_id: str, who: str, label_file, suffix: str, params: dict):
    emptied = params.get("emptied_organs") or []
    if not isinstance(emptied, list) or not all(isinstance(o, str) for o in emptied):
        raise AlqaInputError(None, "params.emptied_organs must be a list of organ names")
    segments = None
    label_info = params.get("label_info")
    if label_info and suffix != ".seg.nrrd":  # a .seg.nrrd names its own segments
        present = label_values(label_file) if needs_values(label_info) else None
        segments = segments_from_label_info(label_info, present)
    note = f"alqa serve ({params.get('model') or 'MONAI Label client'})"
    return write_submission(state.layout.inbox, case_id, who, label_file, "revised", tuple(emptied), note, package=package_id, segments=segments)


@router.post("/infer/{model}")
async def infer(model: str, request: Request, image: str, session_id: str = "", output: str = "", who: str = Depends(annotator)):
    """Auto-segmentation: the package's pseudo label (or the round's for a case never queued), as MONAI's multipart answer."""
    if model != MODEL:
        raise HTTPException(404, f"unknown model {model!r}; alqa offers {MODEL!r}")
    state = state_of(request)
    ref = _ref(image)
    try:
        await drain(request, state.settings.max_upload_bytes)  # params, maybe an image: not needed, never kept
    except TooLarge as exc:
        return JSONResponse({"detail": f"request refused: {exc}"}, 413, headers=CLOSE)
    source = await anyio.to_thread.run_sync(pseudo_label_source, state, ref)
    return await anyio.to_thread.run_sync(infer_response, source, state.settings.campaign.organ_table, model)


SESSIONS = "alqa keeps no sessions: open a case with 'Next sample' (its image comes from the campaign)"


@router.put("/session/")
def create_session(who: str = Depends(annotator)):
    raise _not_offered(SESSIONS)


@router.get("/session/{session_id}")
@router.delete("/session/{session_id}")
def session(session_id: str, who: str = Depends(annotator)):
    raise _not_offered(SESSIONS)
