"""The browser workstation of ``alqa serve``: NiiVue viewer and editor, attention regions, verdicts, leases, a clinical page.

One real round (external members, no network trained), one real ``alqa serve`` on 127.0.0.1, and headless
Chromium (Debian ``chromium`` + ``chromium-driver``; WebGL2 through SwiftShader) cut off from everything but
loopback: a proxy that does not exist and a resolver that knows no name, so any request that tried to leave the
origin would fail, and the browser's own network log shows there was none. Submissions go through the real
submissions sensor and the revision job's assets.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import time
import urllib.request
from pathlib import Path

import dagster as dg
import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from alqa_core.annotation.intake.process import verdict_of
from alqa_core.annotation.queue.packages import find_package
from alqa_core.annotation.queue.regions import STRUCTURE, attention_regions
from alqa_core.catalog import Catalog
from alqa_core.config.campaign import load_campaign
from alqa_core.ingest.cases import index_campaign
from alqa_core.io.nifti import read_label
from alqa_core.workspace import WorkspaceLayout
from alqa_dagster.defs.automation import ROUND_ASSETS
from alqa_dagster.serve.headers import CSP
from alqa_dagster.serve.viewer import MIN_COLOR_DISTANCE

from .conftest import make_resources
from .test_campaign import external_campaign
from .test_serve import REPO, Served, _cli, _materialize, _status, _tick, _token, require, start_server, stop_server

SHOTS = Path(os.environ["ALQA_SCREENSHOT_DIR"]) if os.environ.get("ALQA_SCREENSHOT_DIR") else None
UNLABELED = "PhUnlabeled_0000"  # its dataset has no labels: the reassembled label is the revision, organ by organ


@pytest.fixture(scope="module")
def workstation(tmp_path_factory, phantom_campaign):
    """A queued round holding every case with attention (the unlabeled one among them), and `alqa serve` with dr_a and dr_b."""
    root = tmp_path_factory.mktemp("workstation")
    cfg = external_campaign(root, phantom_campaign)
    cfg.write_text(cfg.read_text().replace("  count: 2\n", "  count: 5\n"))
    resources = make_resources(cfg)
    keys = sorted(index_campaign(load_campaign(cfg)).cases)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("cases", keys)
        for selection in (["raw_scans", "original_labels", "preprocessed_volumes"], ROUND_ASSETS):
            _materialize(instance, resources, selection, keys)
        layout = WorkspaceLayout(root / "ws")
        env = {**os.environ, "ALQA_CAMPAIGN": str(cfg), "ALQA_WORKSPACE": str(layout.root), "PYTHONPATH": str(REPO)}
        s = Served(cfg, root, layout, Catalog(layout.catalog), resources, instance, keys, root / "campaign" / "ground_truth" / "labelsTr", env)
        s.secrets = {name: _cli(env, "annotators", "add", name).stdout.splitlines()[1].strip() for name in ("dr_a", "dr_b")}
        s.log = root / "serve.log"
        proc, s.url = start_server(env, s.log)
        try:
            yield s
        finally:
            stop_server(proc)


def _auth(s: Served, name: str = "dr_a") -> dict:
    return {"Authorization": f"Bearer {_token(s, name)}"}


def _get(url: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def _queued(s: Served, case_id: str):
    queue = s.catalog.read("queue")
    row = queue[queue.case_id == case_id].iloc[0]
    return find_package(s.layout, case_id, row.package_id)


# ------------------------------------------------------------------ the routes, without a browser


def test_a_case_opens_from_a_manifest_with_volumes_under_their_hash_and_regions_in_order(workstation):
    s = workstation
    package = _queued(s, UNLABELED)
    auth = _auth(s)
    code, _, body = _get(f"{s.url}/alqa/cases/{UNLABELED}/{package.package_id}/viewer", auth)
    assert code == 200, body
    manifest = json.loads(body)
    table = load_campaign(s.cfg).organ_table
    assert [o["name"] for o in manifest["organs"]] == list(table.names) and [o["value"] for o in manifest["organs"]] == list(table.values)
    colors = [np.array(o["color"], float) for o in manifest["organs"]]
    closest = min(np.linalg.norm(a - b) for i, a in enumerate(colors) for b in colors[i + 1:])
    assert closest >= MIN_COLOR_DISTANCE, closest  # one colour per organ, none alike (Slicer's table gives both kidneys one)
    assert manifest["organs_to_fix"] == list(package.organs_to_fix) and manifest["image_id"] == f"{UNLABELED}.{package.package_id}"
    assert manifest["lease"] == {"state": "free"} and manifest["windows"]["liver"] == [150, 30]
    for kind, file in (("image", "image.nii.gz"), ("pseudo_label", "pseudo_label.nii.gz"), ("attention", "attention.nii.gz")):
        vol = manifest["volumes"][kind]
        stored = (package.folder / file).read_bytes()
        assert vol["url"].endswith(f"/{vol['sha256']}/{kind}.nii") and vol["bytes"] == len(stored)
        # gzip in transit: the package's own bytes, Content-Encoding gzip, strong ETag = sha256, no disk caching
        code, headers, data = _get(s.url + vol["url"], {**auth, "Accept-Encoding": "gzip"})
        assert code == 200 and data == stored and headers["content-encoding"] == "gzip" and headers["etag"] == f'"{vol["sha256"]}"'
        assert headers["cache-control"] == "no-store"
        assert _get(s.url + vol["url"], {**auth, "If-None-Match": f'"{vol["sha256"]}"'})[0] == 304
        code, headers, data = _get(s.url + vol["url"], auth)  # a client that takes no gzip gets the NIfTI inflated
        assert code == 200 and data == gzip.decompress(stored) and "content-encoding" not in headers
        assert _get(s.url + vol["url"])[0] == 401
        assert _get(s.url + vol["url"].replace(vol["sha256"], "0" * 64), auth)[0] == 404  # a stale version
    code, _, body = _get(s.url + manifest["regions_url"], auth)
    regions = json.loads(body)["regions"]
    att = nib.load(package.folder / "attention.nii.gz")
    heat = np.asarray(att.dataobj)
    expected = attention_regions(heat, np.asarray(nib.load(package.pseudo_label_path).dataobj), att.affine, table, package.organs_to_fix)
    assert regions == [r.as_dict() for r in expected] and len(regions) >= 1
    _, n = ndimage.label(heat > 0, structure=STRUCTURE)
    assert n == len(regions) and all(heat[tuple(r["center_vox"])] > 0 for r in regions)
    assert regions[0]["organ"] == package.organs_to_fix[0]


def test_every_answer_carries_the_security_headers_and_patient_data_is_never_cached(workstation):
    s = workstation
    for path, cache in (("/worklist/", "no-cache"), ("/worklist/vendor/niivue/niivue.umd.js", "no-cache"), ("/alqa/worklist", "no-store"), ("/info/", "no-store")):
        code, headers, _ = _get(s.url + path, _auth(s))
        assert code == 200, path
        assert headers["content-security-policy"] == CSP and "'unsafe-eval'" not in CSP and "'unsafe-inline'" not in CSP
        assert headers["x-frame-options"] == "DENY" and headers["x-content-type-options"] == "nosniff" and headers["referrer-policy"] == "no-referrer"
        assert headers["cache-control"] == cache, path
    code, headers, body = _get(s.url + "/worklist/vendor/niivue/niivue.umd.js", {"Accept-Encoding": "gzip"})
    assert headers["content-encoding"] == "gzip" and len(body) < 1_000_000 and headers["etag"]  # 2.3 MB bundle, compressed
    assert _get(s.url + "/alqa/worklist")[1]["cache-control"] == "no-store"  # the 401 too
    license_text = (Path(REPO) / "alqa_dagster/serve/static/vendor/niivue/LICENSE").read_text()
    assert "BSD 2-Clause" in license_text and "0.69.0" in (Path(REPO) / "alqa_dagster/serve/static/vendor/niivue/README.md").read_text()


def test_leases_are_shown_without_naming_the_holder_and_only_the_holder_releases(workstation):
    s = workstation
    a, b = _auth(s, "dr_a"), _auth(s, "dr_b")
    case = next(k for k in _queue_cases(s) if k != UNLABELED)
    assert _status(f"{s.url}/alqa/cases/{case}/lease", "POST", a)[0] == 200
    rows = {i["case_id"]: i for i in json.loads(_status(f"{s.url}/alqa/worklist", headers=a)[1])["items"]}
    assert rows[case]["lease"]["state"] == "yours" and rows[case]["status"].startswith("held by you until ")
    text = _status(f"{s.url}/alqa/worklist", headers=b)[1]
    theirs = {i["case_id"]: i for i in json.loads(text)["items"]}[case]
    assert theirs["lease"] == {"state": "other"} and theirs["status"] == "held by another reader" and "dr_a" not in text
    assert _status(f"{s.url}/alqa/cases/{case}/lease", "POST", b)[0] == 409
    assert _status(f"{s.url}/alqa/cases/{case}/lease", "DELETE", b)[0] == 409  # not theirs to release
    assert _status(f"{s.url}/alqa/cases/{case}/lease", "DELETE", a)[0] == 200
    assert {i["case_id"]: i for i in json.loads(_status(f"{s.url}/alqa/worklist", headers=b)[1])["items"]}[case]["status"] == "open"
    assert _status(f"{s.url}/alqa/cases/NotQueued/lease", "POST", a)[0] == 404


def test_logout_ends_that_token_only(workstation):
    s = workstation
    t1 = _token(s, "dr_b")
    time.sleep(1.1)  # tokens carry their expiry in seconds: two logins within one second get the same token
    t2 = _token(s, "dr_b")
    assert t1 != t2
    assert _status(f"{s.url}/auth/logout", "POST", {"Authorization": f"Bearer {t1}"})[0] == 200
    assert _status(f"{s.url}/alqa/status", headers={"Authorization": f"Bearer {t1}"})[0] == 401
    assert _status(f"{s.url}/alqa/status", headers={"Authorization": f"Bearer {t2}"})[0] == 200


def test_slicers_url_handler_gets_the_case_with_the_links_capability(workstation):
    s = workstation
    package = _queued(s, UNLABELED)
    manifest = json.loads(_get(f"{s.url}/alqa/cases/{UNLABELED}/{package.package_id}/viewer", _auth(s))[2])
    image_url, seg_url = s.url + manifest["slicer"]["image.nii"], s.url + manifest["slicer"]["pseudo_label.seg.nrrd"]
    # 3D Slicer's download (plain urllib, no token, no gzip): an uncompressed NIfTI and the package's .seg.nrrd
    code, headers, data = _get(image_url)
    assert code == 200 and data == gzip.decompress((package.folder / "image.nii.gz").read_bytes()) and headers["content-disposition"].endswith('.nii"')
    assert _get(seg_url)[2] == (package.folder / "pseudo_label.seg.nrrd").read_bytes()
    forged = image_url.replace(manifest["slicer"]["image.nii"].split("/")[3], f"{UNLABELED}.{package.package_id}.{'a' * 26}")
    assert _get(forged)[0] == 401 and _get(image_url.replace("image.nii", "task.json"))[0] == 404


def _queue_cases(s: Served) -> list[str]:
    return list(s.catalog.read("queue").sort_values("position").case_id)


# ------------------------------------------------------------------ headless Chromium


def browser():
    """Headless Chromium with WebGL2 (SwiftShader) and no way out but loopback."""
    require(shutil.which("chromium") is not None and shutil.which("chromedriver") is not None, "chromium/chromium-driver missing: bash scripts/services.sh install")
    import importlib.util

    require(importlib.util.find_spec("selenium") is not None, "selenium missing: pip install -e '.[dev]'")
    os.environ.setdefault("SE_OFFLINE", "true")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1500,1250",
                "--use-angle=swiftshader", "--enable-unsafe-swiftshader",  # WebGL2 on the CPU (works with or without --disable-gpu)
                "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
                "--proxy-server=http://127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver")), options=options)
    driver.set_script_timeout(120)
    return driver


def _log_in(driver, s: Served, name: str = "dr_a"):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, 60)
    driver.get(s.url + "/")
    wait.until(lambda b: b.find_element(By.ID, "login-name").is_displayed())
    driver.find_element(By.ID, "login-name").send_keys(name)
    driver.find_element(By.ID, "login-token").send_keys(s.secrets[name])
    driver.find_element(By.ID, "login-button").click()
    wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#queue tbody tr")) > 0)
    return wait


def _open(driver, wait, case_id: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, f"#queue tbody tr[data-case='{case_id}']").click()
    driver.find_element(By.ID, "open-button").click()
    wait.until(lambda b: "ready in" in b.find_element(By.ID, "message").text or "bad" in b.find_element(By.ID, "message").get_attribute("class"))
    assert "ready in" in driver.find_element(By.ID, "message").text, driver.find_element(By.ID, "message").text


def _key(driver, keys: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.TAG_NAME, "body").send_keys(keys)


def _click_voxel(driver, affine: np.ndarray, vox) -> None:
    """A real mouse click on the canvas where NiiVue draws voxel ``vox`` of the current axial slice."""
    from selenium.webdriver.common.action_chains import ActionBuilder

    action = ActionBuilder(driver)
    action.pointer_action.move_to_location(*_canvas_point(driver, affine, vox))
    action.pointer_action.click()
    action.perform()


def _no_request_left_the_origin(driver, origin: str) -> set[str]:
    urls = set()
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.add(message["params"]["request"]["url"])
    outside = {u for u in urls if not u.startswith((origin + "/", "data:", "blob:"))}
    assert not outside, f"requests left the server's origin: {sorted(outside)}"
    return urls


def _csp_clean(driver) -> None:
    assert driver.execute_script("return window.alqa.cspViolations") == []
    refused = [e["message"] for e in driver.get_log("browser") if "Content Security Policy" in e["message"] or "Refused to" in e["message"]]
    assert not refused, refused


def test_edit_in_chromium_then_the_sensor_accepts_and_reassembly_differs_from_the_pseudo_label_exactly_where_edited(workstation, tmp_path):
    s = workstation
    table = load_campaign(s.cfg).organ_table
    package = _queued(s, UNLABELED)
    pseudo_img = nib.load(package.pseudo_label_path)
    pseudo, affine = np.asarray(pseudo_img.dataobj), pseudo_img.affine
    heat = np.asarray(nib.load(package.folder / "attention.nii.gz").dataobj)
    labels, _ = ndimage.label(heat > 0, structure=STRUCTURE)
    from selenium.webdriver.common.keys import Keys

    driver = browser()
    try:
        wait = _log_in(driver, s)
        _open(driver, wait, UNLABELED)
        # "n": the crosshair and every slice jump to the first attention region, which lies in the first organ to fix
        _key(driver, "n")
        first = json.loads(_get(f"{s.url}/alqa/cases/{UNLABELED}/{package.package_id}/regions", _auth(s))[2])["regions"][0]
        wait.until(lambda b: b.find_element("id", "region-info").text.startswith("region 1/"))
        info = driver.find_element("id", "region-info").text
        assert first["organ"] in info and f"{first['volume_ml']:.2f} mL" in info, info
        mm = driver.execute_script("return window.alqa.viewer.crosshairMM()")
        vox = tuple(int(v) for v in np.rint(np.linalg.inv(affine) @ np.append(mm, 1.0))[:3])
        assert labels[vox] != 0 and labels[vox] == labels[tuple(first["center_vox"])], (vox, first)
        # paint gallbladder onto three voxels of this axial slice, then erase three liver voxels, by mouse
        k = vox[2]
        gall, liver = table.value_of("gallbladder"), table.value_of("liver")
        ii, jj = np.nonzero(pseudo[:, :, k] == liver)
        order = np.argsort((ii - vox[0]) ** 2 + (jj - vox[1]) ** 2)
        erase = [(int(ii[o]), int(jj[o]), k) for o in order[:3]]
        ii, jj = np.nonzero((pseudo[:, :, k] != gall) & (pseudo[:, :, k] != liver))
        order = np.argsort((ii - vox[0]) ** 2 + (jj - vox[1]) ** 2)
        paint = [(int(ii[o]), int(jj[o]), k) for o in order[:3]]
        driver.find_element("css selector", "#legend button[data-organ='gallbladder']").click()
        _key(driver, "d")
        for v in paint:
            _click_voxel(driver, affine, v)
        wait.until(lambda b: b.execute_script("return window.alqa.editor.undoStack.length") == 3)
        driver.find_element("css selector", "#legend button[data-organ='liver']").click()
        _key(driver, "e")
        for v in erase:
            _click_voxel(driver, affine, v)
        _click_voxel(driver, affine, paint[0])  # erasing liver where there is gallbladder now takes nothing away
        wait.until(lambda b: b.execute_script("return window.alqa.editor.undoStack.length") == 6)
        _key(driver, Keys.CONTROL + "z")  # the last erase undone, then redone
        assert driver.execute_script("return window.alqa.editor.redoStack.length") == 1
        _key(driver, Keys.CONTROL + "y")
        assert driver.execute_script("return [window.alqa.editor.undoStack.length, window.alqa.editor.editedVoxels()]") == [6, 6]
        _key(driver, Keys.CONTROL + "s")  # Ctrl+S: the same PUT /datastore/label as 3D Slicer's "Submit label"
        wait.until(lambda b: "Received" in b.find_element("id", "message").text)
        entry = re.search(r"inbox entry (\S+)\)", driver.find_element("id", "message").text).group(1)
        assert "6 voxel(s) differ" in driver.find_element("id", "message").text
        _csp_clean(driver)
        _no_request_left_the_origin(driver, s.url)
        # the sensor validates it as any submission; the page then shows the verdict
        result = _tick(s)
        verdict = verdict_of(s.layout, entry)
        assert verdict["status"] == "accepted" and verdict["annotator"] == "dr_a" and verdict["package_id"] == package.package_id, verdict
        _key(driver, "r")
        wait.until(lambda b: "accepted" in b.find_element("css selector", f"#queue tbody tr[data-case='{UNLABELED}'] td.verdict").text)
        assert "answered by you" in driver.find_element("css selector", f"#queue tbody tr[data-case='{UNLABELED}'] td.status").text
    finally:
        driver.quit()
    request = next(r for r in result.run_requests if r.partition_key == UNLABELED)
    _materialize(s.instance, s.resources, ["revised_labels", "reassembled_labels"], partition=UNLABELED, tags={"dagster/run_key": request.run_key})
    reassembled = np.asarray(read_label(s.layout.reassembled_label(UNLABELED)).array)
    changed = {tuple(int(c) for c in v) for v in np.argwhere(reassembled != pseudo)}
    assert changed == set(paint) | set(erase)
    assert all(reassembled[v] == gall for v in paint) and all(reassembled[v] == 0 for v in erase)
    prov = s.catalog.read("provenance").query("case_id == @UNLABELED")
    assert set(prov.source) == {"revised"} and set(prov.annotator) == {"dr_a"}


def test_a_refused_upload_shows_its_reason_on_the_page_and_the_case_is_open_again_then_logout_clears_it(workstation, tmp_path):
    s = workstation
    case = next(k for k in _queue_cases(s) if k not in (UNLABELED,) and not _answered(s, k))
    package = _queued(s, case)
    bad = tmp_path / "wrong_grid.nii.gz"
    grid = np.asarray(nib.load(package.pseudo_label_path).dataobj)
    nib.save(nib.Nifti1Image(np.zeros((grid.shape[0] + 1, *grid.shape[1:]), np.uint8), np.eye(4)), bad)
    driver = browser()
    try:
        wait = _log_in(driver, s, "dr_b")
        driver.find_element("css selector", f"#queue tbody tr[data-case='{case}']").click()
        driver.find_element("id", "upload-file").send_keys(str(bad))
        driver.find_element("id", "upload-button").click()
        wait.until(lambda b: "Received" in b.find_element("id", "message").text)
        _tick(s)
        _key(driver, "r")
        row = f"#queue tbody tr[data-case='{case}']"
        wait.until(lambda b: "refused" in b.find_element("css selector", row + " td.verdict").text)
        assert "not on the case's grid" in driver.find_element("css selector", row + " td.verdict").text
        assert driver.find_element("css selector", row + " td.status").text == "open"  # back in the queue, reason beside it
        assert "refused" in driver.find_element("id", "case-state").text and "not on the case's grid" in driver.find_element("id", "case-state").text
        mine = driver.find_element("css selector", "#submissions tbody tr").text
        assert case in mine and "refused" in mine and "not on the case's grid" in mine
        subs = json.loads(_status(f"{s.url}/alqa/submissions", headers=_auth(s, "dr_b"))[1])["submissions"]
        assert subs[0]["case_id"] == case and subs[0]["state"] == "refused" and "not on the case's grid" in subs[0]["reasons"][0]
        # Log out: the token dies on the server and nothing about a patient stays on the page
        token = driver.execute_script("return sessionStorage.getItem('alqa_token')")
        driver.find_element("id", "logout-button").click()
        wait.until(lambda b: b.find_element("id", "login").is_displayed())
        _assert_no_patient_left(driver, s)
        assert _status(f"{s.url}/alqa/status", headers={"Authorization": f"Bearer {token}"})[0] == 401
    finally:
        driver.quit()


def test_fill_and_remove_on_purpose_reach_the_submission_as_voxels_and_emptied_organs(workstation, tmp_path):
    """Fill: an outline dragged with the fill tool is filled on release. Remove on purpose: the organ goes, named in emptied_organs."""
    from selenium.webdriver.common.action_chains import ActionBuilder

    s = workstation
    table = load_campaign(s.cfg).organ_table
    case = next(k for k in _queue_cases(s) if not _answered(s, k))
    package = _queued(s, case)
    img = nib.load(package.pseudo_label_path)
    pseudo, affine = np.asarray(img.dataobj), img.affine
    removed = next(o for o in ("spleen", "kidney_left", "kidney_right") if (pseudo == table.value_of(o)).any())
    driver = browser()
    try:
        wait = _log_in(driver, s, "dr_b")
        _open(driver, wait, case)
        k = pseudo.shape[2] // 2
        centre_mm = (affine @ np.array([pseudo.shape[0] // 2, pseudo.shape[1] // 2, k, 1.0]))[:3].tolist()
        driver.execute_script("const nv = window.alqa.viewer.nv; nv.scene.crosshairPos = nv.mm2frac(arguments[0]); nv.drawScene();", centre_mm)
        # a 7x7-voxel square outline, dragged with the fill tool in gallbladder: the inside is filled too
        corners = [(pseudo.shape[0] // 2 - 3 + di, pseudo.shape[1] // 2 - 3 + dj, k) for di, dj in ((0, 0), (6, 0), (6, 6), (0, 6), (0, 0))]
        driver.find_element("css selector", "#legend button[data-organ='gallbladder']").click()
        _key(driver, "f")
        points = [_canvas_point(driver, affine, c) for c in corners]
        action = ActionBuilder(driver)
        action.pointer_action.move_to_location(*points[0]).pointer_down()
        for p in points[1:]:
            action.pointer_action.move_to_location(*p)
        action.pointer_action.pointer_up()
        action.perform()
        wait.until(lambda b: b.execute_script("return window.alqa.editor.undoStack.length") == 1)
        driver.find_element("css selector", f"#legend button[data-organ='{removed}']").click()
        driver.find_element("id", "remove-organ").click()
        assert removed in driver.find_element("id", "edit-state").text
        driver.find_element("id", "save-button").click()
        wait.until(lambda b: "Received" in b.find_element("id", "message").text)
        entry = re.search(r"inbox entry (\S+)\)", driver.find_element("id", "message").text).group(1)
    finally:
        driver.quit()
    meta = json.loads((s.layout.inbox / f"{entry}.json").read_text())
    assert meta["emptied_organs"] == [removed] and meta["annotator"] == "dr_b" and meta["package"] == package.package_id
    assert meta["segments"] == {str(o.value): o.name for o in table.organs}  # the file's values named by organ
    saved = np.asarray(nib.load(s.layout.inbox / f"{entry}.nii.gz").dataobj)
    ci, cj = pseudo.shape[0] // 2, pseudo.shape[1] // 2
    assert (saved[ci - 2:ci + 3, cj - 2:cj + 3, k] == table.value_of("gallbladder")).all()  # the inside, not only the outline
    assert not (saved == table.value_of(removed)).any()
    outside = np.ones(saved.shape, bool)
    outside[ci - 4:ci + 5, cj - 4:cj + 5, k] = False
    outside &= pseudo != table.value_of(removed)
    np.testing.assert_array_equal(saved[outside], pseudo[outside])  # nothing else changed
    _tick(s)
    verdict = verdict_of(s.layout, entry)
    assert verdict["status"] == "accepted", verdict  # emptied on purpose is no reason to refuse


def _canvas_point(driver, affine: np.ndarray, vox) -> tuple[int, int]:
    mm = (affine @ np.append(np.asarray(vox, float), 1.0))[:3].tolist()
    x, y = driver.execute_script(
        "const nv = window.alqa.viewer.nv; const pos = nv.frac2canvasPos(nv.mm2frac(arguments[0]));"
        "const r = nv.canvas.getBoundingClientRect(); const k = nv.canvas.width / r.width;"
        "return [r.left + pos[0] / k, r.top + pos[1] / k];", mm)
    return int(round(x)), int(round(y))


def _answered(s: Served, case: str) -> bool:
    subs = s.catalog.read("submissions")
    return not subs.empty and bool(((subs.case_id == case) & (subs.status == "accepted")).any())


def _assert_no_patient_left(driver, s: Served) -> None:
    text = driver.execute_script("return document.body.innerText")
    leaked = [k for k in s.keys if k in text]
    assert not leaked, f"patient ids still on the page: {leaked}"
    assert driver.execute_script("return [window.alqa.viewer, window.alqa.editor, window.alqa.volumes.size, window.alqa.items.length, sessionStorage.getItem('alqa_token')]") == [None, None, 0, 0, None]
    assert driver.find_elements("css selector", "#queue tbody tr") == [] and not driver.find_element("id", "app").is_displayed()


def test_an_expired_session_clears_everything_patient_related_from_the_page(workstation, tmp_path):
    s = workstation
    proc, url = start_server(s.env, tmp_path / "short.log", "--token-hours", str(8 / 3600))  # tokens live 8 s
    short = Served(s.cfg, s.root, s.layout, s.catalog, s.resources, s.instance, s.keys, s.truth, s.env, url, tmp_path / "short.log", s.secrets)
    driver = browser()
    try:
        wait = _log_in(driver, short)
        _open(driver, wait, UNLABELED)
        assert driver.execute_script("return window.alqa.volumes.size") == 3
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(driver, 30).until(lambda b: b.find_element("id", "login").is_displayed())  # the page's own timer, no request needed
        assert "expired" in driver.find_element("id", "login-error").text
        _assert_no_patient_left(driver, short)
    finally:
        driver.quit()
        stop_server(proc)


@pytest.mark.slow
def test_screenshot_of_the_viewer_on_the_real_ct_with_its_legend_and_an_attention_region(tmp_path, real_ct_dir, instance):
    """The README's picture: the real CT of ../shared/data after a round with two external tools (one misses part of the liver)."""
    from alqa_core.io.nifti import write_nifti
    from alqa_dagster.definitions import defs

    from .conftest import campaign_yaml

    root = tmp_path / "Dataset010_RealCT"
    (root / "imagesTr").mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({"labels": {"background": 0}, "channel_names": {"0": "CT"}, "file_ending": ".nii.gz"}))
    shutil.copytree(real_ct_dir / "series", root / "imagesTr" / "realct")
    ts = read_label(real_ct_dir / "totalsegmentator_v2_labels.nii.gz")
    write_nifti(root / "predictions" / "toolA" / "realct.nii.gz", np.asarray(ts.array), ts.affine)
    missed = np.array(ts.array)
    liver = missed == 5  # TotalSegmentator v2's liver
    cut = int(np.median(np.nonzero(liver)[1]))
    missed[:, :cut][liver[:, :cut]] = 0  # tool B misses the liver on one side of a plane
    write_nifti(root / "predictions" / "toolB" / "realct.nii.gz", missed, ts.affine)
    cfg = campaign_yaml(tmp_path, tmp_path, architectures=(), datasets=(str(root),))
    members = "external_members:\n  - name: toolA\n    class_map: total\n  - name: toolB\n    class_map: total"
    cfg.write_text(cfg.read_text().replace("external_members: []", members))
    resources = make_resources(cfg)
    instance.add_dynamic_partitions("cases", ["realct"])
    d = defs()
    assert dg.materialize(list(d.assets) + list(d.asset_checks), selection=["raw_scans", "original_labels", "preprocessed_volumes"], instance=instance,
                          resources=resources, partition_key="realct").success
    assert dg.materialize(list(d.assets) + list(d.asset_checks), selection=ROUND_ASSETS, instance=instance, resources=resources,
                          tags={"dagster/asset_partition_range_start": "realct", "dagster/asset_partition_range_end": "realct"}).success
    layout = WorkspaceLayout(tmp_path / "ws")
    env = {**os.environ, "ALQA_CAMPAIGN": str(cfg), "ALQA_WORKSPACE": str(layout.root), "PYTHONPATH": str(REPO)}
    s = Served(cfg, tmp_path, layout, Catalog(layout.catalog), resources, instance, ["realct"], tmp_path, env)
    s.secrets = {"dr_a": _cli(env, "annotators", "add", "dr_a").stdout.splitlines()[1].strip()}
    proc, s.url = start_server(env, tmp_path / "serve.log")
    shots = SHOTS or tmp_path
    shots.mkdir(parents=True, exist_ok=True)
    driver = browser()
    try:
        wait = _log_in(driver, s)
        _open(driver, wait, "realct")
        _key(driver, "n")
        wait.until(lambda b: b.find_element("id", "region-info").text.startswith("region 1/"))
        info = driver.find_element("id", "region-info").text
        legend = driver.find_element("id", "legend").text
        assert "liver" in info and " mL" in info and all(o in legend for o in ("liver", "spleen", "kidney_left", "pancreas"))
        package = _queued(s, "realct")
        img = nib.load(package.folder / "attention.nii.gz")
        mm = driver.execute_script("return window.alqa.viewer.crosshairMM()")
        vox = tuple(int(v) for v in np.rint(np.linalg.inv(img.affine) @ np.append(mm, 1.0))[:3])
        assert np.asarray(img.dataobj)[vox] > 0  # the crosshair sits in the region the picture shows
        _csp_clean(driver)
        _no_request_left_the_origin(driver, s.url)
        driver.save_screenshot(str(shots / "serve_viewer.png"))
    finally:
        driver.quit()
        stop_server(proc)
    assert (shots / "serve_viewer.png").stat().st_size > 50_000


def test_skipping_niivues_unused_gradient_volume_changes_no_pixel(workstation):
    """viewer.js makes NiiVue's 3D gradient volume one texel per slice (no shader reads it at gradientAmount 0): same picture."""
    s = workstation
    grab = ("const nv = window.alqa.viewer.nv; nv.setSliceType(nv.sliceTypeMultiplanar); nv.drawScene(); const gl = nv.gl;"
            "const px = new Uint8Array(gl.drawingBufferWidth * gl.drawingBufferHeight * 4);"
            "gl.readPixels(0, 0, gl.drawingBufferWidth, gl.drawingBufferHeight, gl.RGBA, gl.UNSIGNED_BYTE, px);"
            "let h = 0; let lit = 0; for (let i = 0; i < px.length; i++) { h = (h * 31 + px[i]) >>> 0; lit += px[i] > 0 ? 1 : 0; } return [h, lit];")
    driver = browser()
    try:
        wait = _log_in(driver, s, "dr_b")
        case = _queue_cases(s)[0]
        pictures = []
        for skip in ("true", "false"):
            driver.execute_script(f"AlqaViewer.skipUnusedGradient = {skip}; window.alqaViewerTiming = null;")
            _open(driver, wait, case)
            pictures.append(driver.execute_script(grab))
            slimmed = driver.execute_script("return window.alqa.viewer.nv.alqaSlimTextures")
            assert (slimmed >= 2) if skip == "true" else slimmed is None, slimmed  # the two pictures come from the two configurations
        assert pictures[0] == pictures[1] and pictures[0][1] > 100_000, pictures  # identical, and not a blank canvas
        _csp_clean(driver)
    finally:
        driver.quit()
