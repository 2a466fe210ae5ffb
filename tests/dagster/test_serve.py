"""``alqa serve`` against clients nobody here wrote: MONAI Label's own client, 3D Slicer's call order, headless Chromium.

One real round per module (external members, so no network is trained), one
real ``alqa serve`` (uvicorn) subprocess on 127.0.0.1 with two annotators
made by ``alqa annotators add``. Submissions go through the real
submissions sensor and the revision job's assets. MONAI Label's client
(``pip install --no-deps monailabel==0.8.5``) and Chromium with its driver
(Debian ``chromium`` + ``chromium-driver``, ``scripts/services.sh install``)
are skipped when missing, except on CI (``ALQA_REQUIRE_SERVICES``), where a
missing one fails.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote_plus

import dagster as dg
import numpy as np
import pytest

from alqa_core.annotation.intake.inbox import submitted_segments
from alqa_core.annotation.intake.process import verdict_of
from alqa_core.annotation.intake.label_files import read_submitted_label
from alqa_core.annotation.queue.packages import find_package
from alqa_core.annotation.intake.worklist import read_worklist
from alqa_core.catalog import Catalog
from alqa_core.config.campaign import load_campaign
from alqa_core.ingest.cases import index_campaign
from alqa_core.io.nifti import read_label
from alqa_core.qa.grades import latest_grades
from alqa_core.workspace import WorkspaceLayout
from alqa_dagster.definitions import defs
from alqa_dagster.defs.automation import ROUND_ASSETS, submissions_sensor

from .conftest import make_resources
from .test_campaign import external_campaign

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("ALQA_SCREENSHOT_DIR", "")) if os.environ.get("ALQA_SCREENSHOT_DIR") else None
MAX_FILE_MB = 0.25


def require(ok: bool, reason: str) -> None:
    if ok:
        return
    if os.environ.get("ALQA_REQUIRE_SERVICES") or os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must run the alqa serve tests (bash scripts/test.sh installs what they need)")
    pytest.skip(reason)


def monai_client():
    require(importlib.util.find_spec("monailabel") is not None, "MONAI Label's client missing: pip install --no-deps monailabel==0.8.5")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # its client imports cgi
        from monailabel.client.client import MONAILabelClient, MONAILabelClientException
    return MONAILabelClient, MONAILabelClientException


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Served:
    cfg: Path
    root: Path
    layout: WorkspaceLayout
    catalog: Catalog
    resources: dict
    instance: dg.DagsterInstance
    keys: list
    truth: Path
    env: dict
    url: str = ""
    log: Path | None = None
    secrets: dict | None = None


def _cli(env, *argv, check=True) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "alqa_dagster.cli", *argv], env=env, capture_output=True, text=True, timeout=120, check=False)
    if check:
        assert out.returncode == 0, out.stderr
    return out


def start_server(env, log: Path, *args) -> tuple[subprocess.Popen, str]:
    port = free_port()
    with open(log, "w") as fh:  # the child keeps its own descriptor
        proc = subprocess.Popen([sys.executable, "-m", "alqa_dagster.cli", "serve", "--port", str(port), *args], env=env, stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(url + "/auth/", timeout=1)
            return proc, url
        except OSError:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.1)
    proc.terminate()
    raise AssertionError(f"alqa serve did not answer: {log.read_text()}")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def served(tmp_path_factory, phantom_campaign):
    """A queued round of 3 cases (external members), and `alqa serve` on it with annotators dr_a and dr_b."""
    root = tmp_path_factory.mktemp("serve")
    cfg = external_campaign(root, phantom_campaign)
    cfg.write_text(cfg.read_text().replace("  count: 2\n", "  count: 3\n").replace("max_file_mb: 2048", f"max_file_mb: {MAX_FILE_MB}"))
    resources = make_resources(cfg)
    keys = sorted(index_campaign(load_campaign(cfg)).cases)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("cases", keys)
        for selection in (["raw_scans", "original_labels", "preprocessed_volumes"], ROUND_ASSETS):
            _materialize(instance, resources, selection, keys)
        layout = WorkspaceLayout(root / "ws")
        env = {**os.environ, "ALQA_CAMPAIGN": str(cfg), "ALQA_WORKSPACE": str(layout.root), "PYTHONPATH": str(REPO)}
        s = Served(cfg, root, layout, Catalog(layout.catalog), resources, instance, keys, root / "campaign" / "ground_truth" / "labelsTr", env)
        s.secrets = {}
        for name in ("dr_a", "dr_b"):
            out = _cli(env, "annotators", "add", name).stdout
            s.secrets[name] = out.splitlines()[1].strip()
        s.log = root / "serve.log"
        proc, s.url = start_server(env, s.log)
        try:
            yield s
        finally:
            stop_server(proc)


def _materialize(instance, resources, selection, keys=None, partition=None, tags=None):
    run_tags = dict(tags or {})
    if keys:
        run_tags.update({"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]})
    d = defs()
    result = dg.materialize(list(d.assets) + list(d.asset_checks), selection=selection, instance=instance, resources=resources, tags=run_tags, partition_key=partition)
    assert result.success
    return result


def _tick(s: Served):
    with dg.build_sensor_context(instance=s.instance, resources=s.resources) as ctx:
        return submissions_sensor(ctx)


def logged_in(s: Served, name: str = "dr_a", client_id: str = "user-xyz"):
    Client, _ = monai_client()
    client = Client(s.url, tempfile.mkdtemp(), client_id)
    client.update_auth(client.auth_token(name, s.secrets[name]))
    return client


def _log_offset(s: Served) -> int:
    return len(s.log.read_text())


def _requests_since(s: Served, offset: int) -> list[str]:
    """The server's own access log since ``offset``: 'METHOD /path?query STATUS' per request."""
    lines = s.log.read_text()[offset:].splitlines()
    return [f"{m.group(1)} {m.group(2)} {m.group(3)}" for m in (re.search(r'"(\w+) (\S+) HTTP/1.1" (\d+)', line) for line in lines) if m]


# ------------------------------------------------------------------ MONAI Label's client: the whole cycle


def test_monai_label_client_cycle_to_an_accepted_and_reassembled_revision(served):
    s = served
    Client, Error = monai_client()
    client = Client(s.url, tempfile.mkdtemp(), "user-xyz")
    assert client.auth_enabled()
    with pytest.raises(Error):
        client.auth_token("dr_a", "not the token")
    client.update_auth(client.auth_token("dr_a", s.secrets["dr_a"]))
    assert client.auth_valid_token()
    info = client.info()
    table = load_campaign(s.cfg).organ_table
    assert info["labels"] == list(table.names) and "config" not in info
    assert info["strategies"] == {"alqa_priority": {"description": info["strategies"]["alqa_priority"]["description"]}}
    assert {k: info["models"]["alqa_ensemble"][k] for k in ("type", "dimension")} == {"type": "segmentation", "dimension": 3}
    assert info["datastore"]["total"] == 3 and info["datastore"]["completed"] == 0
    assert client.train_status(True) is False  # nothing training: 404

    sample = client.next_sample("alqa_priority", {})
    queue = s.catalog.read("queue").sort_values("position")
    top = queue.iloc[0]
    assert sample["case_id"] == top.case_id and sample["package_id"] == top.package_id
    assert sample["name"] == f"{top.case_id}_{top.package_id}.nii.gz"
    package = find_package(s.layout, top.case_id, top.package_id)
    # the image, as Slicer fetches it (plain urllib, no token), matches the checksum
    data = urllib.request.urlopen(f"{s.url}/datastore/image?image={quote_plus(sample['id'])}").read()
    assert sample["checksum"] == "SHA256:" + hashlib.sha256(data).hexdigest() and data == (package.folder / "image.nii.gz").read_bytes()
    original = client.download_label(sample["id"], "original")
    assert Path(original).read_bytes() == package.pseudo_label_path.read_bytes() and original.endswith(".nii.gz")
    result, params = client.infer("alqa_ensemble", sample["id"], {"result_extension": ".nrrd", "result_dtype": "uint8"})
    assert Path(result).read_bytes() == package.pseudo_label_path.read_bytes() and params["label_names"] == {o.name: o.value for o in table.organs}

    # submit the truth as the revision: values named through label_info, as the client sends them
    revised = Path(tempfile.mkdtemp()) / "revised.nii.gz"
    shutil.copyfile(s.truth / f"{top.case_id}.nii.gz", revised)
    label_info = [{"name": o.name, "idx": o.value} for o in table.organs]
    saved = client.save_label(sample["id"], str(revised), params={"label_info": label_info, "model": "alqa_ensemble"})
    assert saved["annotator"] == "dr_a" and saved["case_id"] == top.case_id and saved["package_id"] == top.package_id
    assert client.next_sample("alqa_priority", {})["case_id"] == queue.iloc[1].case_id  # waiting for the sensor: not handed out again

    result = _tick(s)
    verdict = verdict_of(s.layout, saved["entry"])
    assert verdict["status"] == "accepted" and verdict["annotator"] == "dr_a" and verdict["package_id"] == top.package_id, verdict
    request = next(r for r in result.run_requests if r.partition_key == top.case_id)
    _materialize(s.instance, s.resources, ["revised_labels", "reassembled_labels"], partition=top.case_id, tags={"dagster/run_key": request.run_key})
    prov = s.catalog.read("provenance").query("case_id == @top.case_id")
    assert "revised" in set(prov.source) and set(prov.annotator[prov.source == "revised"]) == {"dr_a"}
    truth = np.asarray(read_label(s.truth / f"{top.case_id}.nii.gz").array)
    np.testing.assert_array_equal(np.asarray(read_label(s.layout.reassembled_label(top.case_id)).array), truth)
    assert client.info()["datastore"]["completed"] == 1


# ------------------------------------------------------------------ 3D Slicer's module, replayed in its order


def slicer_logic_client(s: Served, held: dict):
    """Slicer's ``_client()``, run before every logic call: a new client, GET /auth/, then the token checked or fetched."""
    Client, _ = monai_client()
    client = Client(s.url, tempfile.mkdtemp(), "user-xyz")
    if client.auth_enabled():
        if held.get("token"):
            client.update_auth(held["token"])
        if not held.get("token") or not client.auth_valid_token():
            held["token"] = client.auth_token("dr_b", s.secrets["dr_b"])
            client.update_auth(held["token"])
    return client


def test_slicer_next_sample_and_submit_label_replayed_in_its_call_order(served):
    s = served
    table = load_campaign(s.cfg).organ_table
    held: dict = {}
    start = _log_offset(s)
    # connect: fetch info, then the GUI refresh polls training
    info = slicer_logic_client(s, held).info()
    assert slicer_logic_client(s, held).train_status(True) is False
    # "Next sample" (onNextSampleButton)
    sample = slicer_logic_client(s, held).next_sample(next(iter(info["strategies"])), {})
    assert sample["id"] and sample["checksum"].startswith("SHA256:") and "/" not in sample["name"] and sample["name"].endswith(".nii.gz")
    cache = Path(tempfile.mkdtemp()) / sample["name"]  # SampleData: the cache file is named by `name`
    urllib.request.urlretrieve(f"{s.url}/datastore/image?image={quote_plus(sample['id'])}", cache)
    algo, digest = sample["checksum"].split(":")
    assert algo == "SHA256" and hashlib.sha256(cache.read_bytes()).hexdigest() == digest.lower()
    datastore = slicer_logic_client(s, held).datastore()
    label_names = datastore["objects"][sample["id"]]["labels"]["original"]["info"]["params"]["label_names"]
    labels = [n for n in label_names if n != "background"]
    mask = slicer_logic_client(s, held).download_label(sample["id"], "original")
    # Slicer's import: value i+1 becomes segment labels[i]; each segment must hold the package's organ
    package = find_package(s.layout, sample["case_id"], sample["package_id"])
    imported, pseudo = np.asarray(read_label(Path(mask)).array), np.asarray(read_label(package.pseudo_label_path).array)
    for i, name in enumerate(labels):
        np.testing.assert_array_equal(imported == i + 1, pseudo == table.value_of(name))
    assert slicer_logic_client(s, held).train_status(True) is False
    # "Submit label" (onSaveLabel): the edited segments exported as a labelmap numbered by segment position
    truth = read_label(s.truth / f"{sample['case_id']}.nii.gz")
    exported = np.zeros(truth.shape, np.uint8)
    for i, name in enumerate(labels):
        exported[np.asarray(truth.array) == table.value_of(name)] = i + 1
    label_in = Path(tempfile.mkdtemp()) / "tmpab12.nii.gz"  # NamedTemporaryFile(suffix=".nii.gz")
    import nibabel as nib

    nib.save(nib.Nifti1Image(exported, truth.affine), label_in)
    label_info = [{"name": name, "idx": i + 1} for i, name in enumerate(labels)]
    saved = slicer_logic_client(s, held).save_label(sample["id"], str(label_in), params={"label_info": label_info, "model": "alqa_ensemble"})
    slicer_logic_client(s, held).info()  # fetchInfo()
    assert slicer_logic_client(s, held).train_status(True) is False
    assert saved["annotator"] == "dr_b"  # the token's annotator, never the self-declared client_id "user-xyz"

    sequence = _requests_since(s, start)
    print("\n".join(["requests as alqa serve logged them:", *sequence]))
    calls = [" ".join(r.split(" ")[:2]).split("?")[0] for r in sequence]
    assert calls == [
        "GET /auth/", "POST /auth/token", "GET /info/",
        "GET /auth/", "GET /auth/token/valid", "GET /train/",
        "GET /auth/", "GET /auth/token/valid", "POST /activelearning/alqa_priority",
        "GET /datastore/image",
        "GET /auth/", "GET /auth/token/valid", "GET /datastore/",
        "GET /auth/", "GET /auth/token/valid", "GET /datastore/label",
        "GET /auth/", "GET /auth/token/valid", "GET /train/",
        "GET /auth/", "GET /auth/token/valid", "PUT /datastore/label",
        "GET /auth/", "GET /auth/token/valid", "GET /info/",
        "GET /auth/", "GET /auth/token/valid", "GET /train/",
    ]
    assert [r.rsplit(" ", 1)[1] for r in sequence if r.startswith("GET /train/")] == ["404"] * 3
    assert all(r.endswith(" 200") for r in sequence if not r.startswith("GET /train/"))

    _tick(s)
    verdict = verdict_of(s.layout, saved["entry"])
    assert verdict["status"] == "accepted" and verdict["annotator"] == "dr_b", verdict
    stored = read_submitted_label(Path(verdict["stored_path"]), table, submitted_segments(verdict))
    np.testing.assert_array_equal(np.asarray(stored.array), np.asarray(truth.array))  # every organ by name, none shifted


def test_label_info_shifted_by_a_skipped_segment_is_read_from_the_file_values(served):
    """Slicer counts a 'background' segment in idx but not in the exported values: the server resolves it by the file."""
    s = served
    client = logged_in(s, "dr_a")
    table = load_campaign(s.cfg).organ_table
    case = next(i for i in read_worklist(s.catalog, s.layout.inbox).items if i.open)  # not answered yet (so not a duplicate)
    truth = read_label(s.truth / f"{case.case_id}.nii.gz")
    names = list(table.names)
    exported = np.zeros(truth.shape, np.uint8)
    for i, name in enumerate(names):
        exported[np.asarray(truth.array) == table.value_of(name)] = i + 1
    import nibabel as nib

    path = Path(tempfile.mkdtemp()) / "shifted.nii.gz"
    nib.save(nib.Nifti1Image(exported, truth.affine), path)
    label_info = [{"name": n, "idx": i + 2} for i, n in enumerate(names)]  # segment 1 was 'background', skipped
    saved = client.save_label(f"{case.case_id}.{case.package_id}", str(path), params={"label_info": label_info})
    meta = json.loads((s.layout.inbox / f"{saved['entry']}.json").read_text())
    assert meta["segments"] == {str(i + 1): n for i, n in enumerate(names)}  # by the file's values 1..N, not idx 2..N+1
    _tick(s)
    verdict = verdict_of(s.layout, saved["entry"])
    assert verdict["status"] == "accepted", verdict
    stored = read_submitted_label(Path(verdict["stored_path"]), table, submitted_segments(verdict))
    np.testing.assert_array_equal(np.asarray(stored.array), np.asarray(truth.array))


# ------------------------------------------------------------------ refusals


def _status(url: str, method: str = "GET", headers: dict | None = None, data: bytes | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, method=method, headers=headers or {}, data=data)
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def _token(s: Served, name: str) -> str:
    body = f"username={name}&password={quote_plus(s.secrets[name])}&grant_type=password".encode()
    code, text = _status(s.url + "/auth/token", "POST", {"Content-Type": "application/x-www-form-urlencoded"}, body)
    assert code == 200, text
    return json.loads(text)["access_token"]


def test_no_token_a_wrong_token_a_forged_or_revoked_one_get_401(served):
    s = served
    image_id = next(iter(logged_in(s).datastore()["objects"]))  # <case>.<package>.<capability>, as handed out
    guarded = [
        ("GET", "/info/"), ("GET", "/train/?check_if_running=true"), ("POST", "/activelearning/alqa_priority"), ("GET", "/datastore/?output=all"),
        ("GET", f"/datastore/label?label={image_id}&tag=original"), ("PUT", f"/datastore/label?image={image_id}"),
        ("POST", f"/infer/alqa_ensemble?image={image_id}"), ("GET", "/auth/token/valid"), ("GET", "/alqa/worklist"), ("GET", "/alqa/status"),
        ("POST", f"/alqa/cases/{s.keys[0]}/grade"),
    ]
    token = _token(s, "dr_a")
    name, cid, expiry, mac = token.split(".")
    forged = [f"{name}.{cid}.{int(expiry) + 10**6}.{mac}", f"dr_b.{cid}.{expiry}.{mac}", "garbage", token[:-2] + ("AA" if token[-2:] != "AA" else "BB")]
    for method, path in guarded:
        assert _status(s.url + path, method)[0] == 401, path
        for bad in forged:
            code, text = _status(s.url + path, method, {"Authorization": f"Bearer {bad}"})
            assert code == 401 and "invalid, expired or revoked" in text, (path, bad, text)
        assert _status(s.url + path, method, {"Authorization": f"Basic {token}"})[0] == 401
    assert _status(s.url + "/auth/token/valid", headers={"Authorization": f"bearer {token}"})[0] == 200
    # the wrong secret gets no token; the image needs the id's capability when no token is sent
    code, _ = _status(s.url + "/auth/token", "POST", {"Content-Type": "application/x-www-form-urlencoded"}, b"username=dr_a&password=wrong&grant_type=password")
    assert code == 401
    case, package, cap = image_id.split(".")
    other_cap = "a" * 26 if cap != "a" * 26 else "b" * 26
    for bad in (case, f"{case}.{package}", f"{case}.{package}.{other_cap}"):
        assert _status(f"{s.url}/datastore/image?image={bad}")[0] == 401, bad
    assert _status(f"{s.url}/datastore/image?image={case}", headers={"Authorization": f"Bearer {token}"})[0] == 200
    # revoking an annotator ends their tokens at once
    token_b = _token(s, "dr_b")
    assert _status(s.url + "/alqa/status", headers={"Authorization": f"Bearer {token_b}"})[0] == 200
    _cli(s.env, "annotators", "revoke", "dr_b")
    assert _status(s.url + "/alqa/status", headers={"Authorization": f"Bearer {token_b}"})[0] == 401
    assert _status(s.url + "/auth/token", "POST", {"Content-Type": "application/x-www-form-urlencoded"},
                   f"username=dr_b&password={quote_plus(s.secrets['dr_b'])}&grant_type=password".encode())[0] == 401
    listed = _cli(s.env, "annotators", "list").stdout
    assert re.search(r"dr_b .* revoked ", listed) and re.search(r"dr_a .* active", listed)


@pytest.mark.parametrize("bad", ["../../etc/passwd", "..", "%2e%2e%2fcatalog", "PhX.r000-../../x", "a/b", "PhLiver_0000.r000-0123456789ab.../", "x" * 200, "a.b.c.d"])
def test_ids_that_could_escape_the_workspace_are_refused(served, bad):
    s = served
    auth = {"Authorization": f"Bearer {_token(s, 'dr_a')}"}
    for path in (f"/datastore/image?image={quote_plus(bad)}", f"/datastore/label?label={quote_plus(bad)}&tag=original",
                 f"/infer/alqa_ensemble?image={quote_plus(bad)}"):
        code, text = _status(s.url + path, "POST" if path.startswith("/infer") else "GET", auth)
        assert code == 400 and "invalid image id" in text, (path, code, text)
    code, text = _status(f"{s.url}/datastore/label?image={quote_plus(bad)}", "PUT", {**auth, "Content-Type": "multipart/form-data; boundary=x"}, b"--x--\r\n")
    assert code == 400 and "invalid image id" in text
    for path in (f"/alqa/cases/{quote_plus(bad)}/grade",):
        code, _ = _status(s.url + path, "POST", {**auth, "Content-Type": "application/json"}, b'{"grade": 1}')
        assert code in (400, 404), path
    code, _ = _status(f"{s.url}/alqa/cases/{s.keys[0]}/{quote_plus(bad)}/preview.png", headers=auth)
    assert code in (400, 404)


def _raw(url: str, head: str, body_chunks=(), chunked: bool = False) -> tuple[int, int]:
    """Send a request by hand while reading the answer; return (status, body bytes sent before the status came back)."""
    host, port = url.split("//")[1].split(":")
    sent, reply = 0, b""
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head.encode())
        sock.settimeout(0.05)
        for chunk in body_chunks:
            try:
                reply += sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                pass
            if reply:
                break
            try:
                sock.sendall((f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n") if chunked else chunk)
            except OSError:  # the server answered and closed: read what it said
                break
            sent += len(chunk)
        sock.settimeout(30)
        while b"\r\n" not in reply:
            data = sock.recv(65536)
            if not data:
                break
            reply += data
    return int(reply.split(b" ", 2)[1]), sent


def test_uploads_stop_at_the_size_limit_while_they_stream(served):
    s = served
    limit = int(MAX_FILE_MB * 2**20)
    token = _token(s, "dr_a")
    auth = f"Authorization: Bearer {token}\r\n"
    target = f"{s.keys[0]}"
    before = sorted(p.name for p in s.layout.inbox.iterdir()) if s.layout.inbox.exists() else []
    # declared too large: refused before a byte of the body is sent
    head = f"PUT /datastore/label?image={target} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: multipart/form-data; boundary=B\r\nContent-Length: {64 * 2**20}\r\n\r\n"
    assert _raw(s.url, head) == (413, 0)
    # streamed without a length: refused once the file passes the limit, long before the 64 MiB the client would send
    head = f"PUT /datastore/label?image={target} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: multipart/form-data; boundary=B\r\nTransfer-Encoding: chunked\r\n\r\n"
    preamble = b'--B\r\nContent-Disposition: form-data; name="label"; filename="big.nii.gz"\r\nContent-Type: application/gzip\r\n\r\n'
    status, sent = _raw(s.url, head, [preamble, *([b"\0" * 2**16] * 1024)], chunked=True)
    assert status == 413 and limit < sent < 16 * 2**20, sent
    # other routes: a body over 1 MiB is refused before it is read
    head = f"POST /activelearning/alqa_priority HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {2**20 + 10}\r\n\r\n"
    assert _raw(s.url, head) == (413, 0)
    # MONAI Label's client sends the whole file before it reads the answer: it gets the 413, or the closed connection
    _, Error = monai_client()
    big = Path(tempfile.mkdtemp()) / "big.nii.gz"
    big.write_bytes(os.urandom(limit + 4096))
    with pytest.raises((Error, ConnectionError)) as refused:
        logged_in(s).save_label(target, str(big), params={})
    assert isinstance(refused.value, ConnectionError) or "413" in refused.value.msg
    after = sorted(p.name for p in s.layout.inbox.iterdir()) if s.layout.inbox.exists() else []
    assert after == before  # nothing reached the inbox


def test_no_auth_is_refused_off_loopback_and_attributes_writes_on_it(served, tmp_path):
    s = served
    out = _cli(s.env, "serve", "--no-auth", "--host", "0.0.0.0", "--port", str(free_port()), check=False)
    assert out.returncode == 2 and "--no-auth is allowed on a loopback address only" in out.stderr
    proc, url = start_server(s.env, tmp_path / "noauth.log", "--no-auth", "--annotator", "dr_local")
    try:
        assert json.loads(_status(url + "/auth/")[1])["enabled"] is False
        code, text = _status(url + f"/alqa/cases/{s.keys[1]}/grade", "POST", {"Content-Type": "application/json"}, b'{"grade": 1, "note": "no-auth"}')
        assert code == 200 and json.loads(text)["grader"] == "dr_local"
    finally:
        stop_server(proc)
    grades = s.catalog.read("qa_grades")
    assert set(grades[grades.note == "no-auth"].grader) == {"dr_local"}


def test_https_with_a_certificate(served, tmp_path):
    s = served
    require(shutil.which("openssl") is not None, "openssl missing (Debian: openssl)")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-days", "1",
                    "-keyout", str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem")], check=True, capture_output=True)
    Client, _ = monai_client()
    port = free_port()
    with open(tmp_path / "tls.log", "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "alqa_dagster.cli", "serve", "--port", str(port), "--ssl-certfile", str(tmp_path / "cert.pem"),
                                 "--ssl-keyfile", str(tmp_path / "key.pem")], env=s.env, stdout=fh, stderr=subprocess.STDOUT)
    try:
        client = Client(f"https://127.0.0.1:{port}", tempfile.mkdtemp(), "user-xyz")  # its client does not verify certificates
        for _ in range(300):
            try:
                assert client.auth_enabled()
                break
            except (OSError, AssertionError):
                assert proc.poll() is None, (tmp_path / "tls.log").read_text()
                time.sleep(0.1)
        client.update_auth(client.auth_token("dr_a", s.secrets["dr_a"]))
        assert client.info()["strategies"]
    finally:
        stop_server(proc)


def test_routes_alqa_does_not_offer_answer_with_a_reason(served):
    s = served
    auth = {"Authorization": f"Bearer {_token(s, 'dr_a')}"}
    for method, path in (("PUT", "/session/"), ("GET", "/session/abc"), ("POST", "/train/alqa_ensemble"), ("PUT", "/datastore/?image=x")):
        code, text = _status(s.url + path, method, auth, b"" if method != "GET" else None)
        assert code == 501 and json.loads(text)["detail"], (path, text)
    assert _status(s.url + "/activelearning/random", "POST", {**auth, "Content-Type": "application/json"}, b"{}")[0] == 404
    assert _status(s.url + "/infer/other?image=" + s.keys[0], "POST", auth, b"")[0] == 404


# ------------------------------------------------------------------ the running server loads no dagster, torch or MONAI

PROBE = """
import json, sys, threading, time, urllib.request
import uvicorn
from alqa_core.config.campaign import load_campaign
from alqa_core.workspace import WorkspaceLayout
from alqa_dagster.serve.app import create_app
from alqa_dagster.serve.state import ServeSettings
app = create_app(ServeSettings(WorkspaceLayout(sys.argv[2]), load_campaign(sys.argv[1]), auth=False, local_annotator="probe"))
server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=int(sys.argv[3]), log_level="warning"))
threading.Thread(target=server.run, daemon=True).start()
while not server.started:
    time.sleep(0.05)
url = "http://127.0.0.1:" + sys.argv[3]
urllib.request.urlopen(urllib.request.Request(url + "/activelearning/alqa_priority", data=b"{}", method="POST")).read()
image = next(iter(json.loads(urllib.request.urlopen(url + "/datastore/?output=all").read())["objects"]))
urllib.request.urlopen(urllib.request.Request(url + "/infer/alqa_ensemble?image=" + image, data=b"", method="POST")).read()
for path in ["/info/", "/alqa/worklist", "/alqa/status", "/worklist/", "/worklist/app.js", "/datastore/image?image=" + image,
             "/datastore/label?label=" + image + "&tag=original", "/train/"]:
    try:
        urllib.request.urlopen(url + path).read()
    except urllib.error.HTTPError as e:
        assert e.code == 404 and path == "/train/", (path, e.code)
server.should_exit = True
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & {"torch", "monai", "dagster", "numba"})))
"""


def test_the_running_server_imports_no_dagster_torch_monai_or_numba(served, tmp_path):
    s = served
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    out = subprocess.run([sys.executable, str(script), str(s.cfg), str(s.layout.root), str(free_port())], env=s.env, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


# ------------------------------------------------------------------ the web worklist in headless Chromium


def chromium():
    require(importlib.util.find_spec("selenium") is not None, "selenium missing: pip install -e '.[dev]'")
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    require(bool(browser and driver), "chromium/chromium-driver missing: bash scripts/services.sh install")
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager fetch a driver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,900"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def test_the_worklist_in_chromium_logs_in_and_grades_a_case_by_key(served, tmp_path):
    s = served
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    shots = ARTIFACTS or tmp_path
    shots.mkdir(parents=True, exist_ok=True)
    browser = chromium()
    try:
        wait = WebDriverWait(browser, 30)
        browser.get(s.url + "/")  # redirects to the worklist
        wait.until(ec.visibility_of_element_located((By.ID, "login-name")))
        browser.save_screenshot(str(shots / "serve_login.png"))
        browser.find_element(By.ID, "login-name").send_keys("dr_a")
        browser.find_element(By.ID, "login-token").send_keys(s.secrets["dr_a"])
        browser.find_element(By.ID, "login-button").click()
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#queue tbody tr")) == 3)
        wait.until(lambda b: b.find_element(By.ID, "open-button").is_enabled())  # a case is selected (the viewer: test_serve_viewer.py)
        status = browser.find_element(By.ID, "campaign-status").text
        assert "round 0" in status and "answered" in status and "pending" in status, status
        selected = browser.find_element(By.CSS_SELECTOR, "#queue tbody tr.selected").get_attribute("data-case")
        browser.find_element(By.TAG_NAME, "body").send_keys("2")
        wait.until(lambda b: "2 failure" in b.find_element(By.CSS_SELECTOR, f"#queue tbody tr[data-case='{selected}']").text)
        assert "graded" in browser.find_element(By.ID, "message").text
        browser.save_screenshot(str(shots / "serve_worklist.png"))
        # the next case: a revised label uploaded through the page (the same PUT /datastore/label as Slicer's)
        browser.find_element(By.TAG_NAME, "body").send_keys("j")
        wait.until(lambda b: b.find_element(By.CSS_SELECTOR, "#queue tbody tr.selected").get_attribute("data-case") != selected)
        uploaded = browser.find_element(By.CSS_SELECTOR, "#queue tbody tr.selected").get_attribute("data-case")
        browser.find_element(By.ID, "upload-file").send_keys(str(s.truth / f"{uploaded}.nii.gz"))
        browser.find_element(By.ID, "upload-button").click()
        wait.until(lambda b: "Received" in b.find_element(By.ID, "message").text)
        entry = re.search(r"inbox entry (\S+)\)", browser.find_element(By.ID, "message").text).group(1)
    finally:
        browser.quit()
    grades = latest_grades(s.catalog)
    row = grades[(grades.case_id == selected) & (grades["round"] == 0)].iloc[0]
    assert (int(row.grade), row.grader) == (2, "dr_a")
    assert (shots / "serve_worklist.png").stat().st_size > 10_000
    meta = json.loads((s.layout.inbox / f"{entry}.json").read_text())
    assert (meta["case_id"], meta["annotator"], meta["kind"]) == (uploaded, "dr_a", "revised")
    assert (s.layout.inbox / f"{entry}.nii.gz").read_bytes() == (s.truth / f"{uploaded}.nii.gz").read_bytes()


def test_a_round_in_flight_shows_as_training_to_slicer(served):
    """While the next round trains and predicts in Dagster, check_if_running answers 200 and GET /train/ says RUNNING."""
    from ..conftest import walk_round

    s = served
    client = logged_in(s)
    assert client.train_status(True) is False
    round0 = s.catalog.path_of("rounds", "round_000")
    queued = round0.read_bytes()
    walk_round(s.catalog, 1, "opened", "round 1 started by the round sensor")  # round 0 closed, round 1 opened
    try:
        assert client.train_status(True) is True
        task = client.train_status(False)
        assert task["status"] == "RUNNING" and task["request"]["round"] == 1 and task["start_ts"]
        assert client.next_sample("alqa_priority", {}) == {}  # round 1 has no queue yet: nothing to hand out
    finally:
        s.catalog.path_of("rounds", "round_001").unlink()  # this module's later state is round 0's, queued
        round0.write_bytes(queued)
    assert client.train_status(True) is False
