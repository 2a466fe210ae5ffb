"""``alqa serve``'s latency with a large queue ("Next sample" at 10,000 queued cases), and the browser viewer's load time.

    .venv/bin/python benchmarks/bench_serve.py [--cases 10000] [--answered 2000] [--annotators 20] [--repeat 50]
    .venv/bin/python benchmarks/bench_serve.py --viewer [--shape 512,512,300] [--repeat 3]

``--viewer``: one work package of ``--shape`` (a synthetic abdomen: int16 CT
with 12 HU noise, nine organs, two attention regions; written by
``write_work_package``, the product's own path) behind the real app, opened
``--repeat`` times in headless Chromium (the page reloaded each time, so
nothing is cached) by clicking "Open in viewer". The page's own
``performance.now()`` brackets the load (NiiVue attached, CT + label +
attention fetched, parsed, on the GPU and drawn, read back so the GPU has
finished): it is printed split into fetch / parse / GPU, beside the time the
same browser takes to download the same three files (gzip in transit,
inflated by the browser) and Python's time for their raw bytes. The WebGL
renderer is printed too: on a machine without a GPU Chromium renders with
SwiftShader (on the CPU), and NiiVue's per-voxel GPU passes then dominate.

1. Writes a campaign whose round 0 queue holds ``--cases`` cases (the catalog's
   ``queue`` table written directly, as ``annotation_queue`` writes it), of which
   the first ``--answered`` have an accepted submission (``submissions``
   partitions of 50 rows, as the sensor writes them). The next ``--annotators``
   open cases get a real work package (a phantom CT, so their images are small).
2. Starts the real app under uvicorn on 127.0.0.1 (auth on: one annotator, one
   login) and times each route over one keep-alive connection, as Slicer's
   client would (it opens a new connection per call, which adds ~0.2 ms).
3. Baseline in the same process and loop: ``GET /auth/`` (a constant JSON
   answer through the same stack); every route's median is printed with its
   ratio to it. The routes reuse the worklist while the catalog's tables and
   the inbox are unchanged; "after a change" times the call that re-reads it
   (an inbox entry written first), and ``read_worklist`` alone (a fresh DuckDB
   connection each time) is the core's cost.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from alqa_core.annotation.intake.annotators import add_annotator  # noqa: E402
from alqa_core.annotation.intake.inbox import write_submission  # noqa: E402
from alqa_core.annotation.queue.work_package import write_work_package  # noqa: E402
from alqa_core.annotation.intake.worklist import read_worklist  # noqa: E402
from alqa_core.catalog import Catalog  # noqa: E402
from alqa_core.config.campaign import load_campaign  # noqa: E402
from alqa_core.config.template import write_template  # noqa: E402
from alqa_core.io.nifti import read_ct, read_label  # noqa: E402
from alqa_core.phantoms.campaign import CampaignSpec, write_campaign  # noqa: E402
from alqa_core.rounds import transition  # noqa: E402
from alqa_core.workspace import WorkspaceLayout  # noqa: E402


def build(root: Path, n_cases: int, answered: int, annotators: int) -> tuple[Path, WorkspaceLayout, dict]:
    phantoms = write_campaign(root / "phantoms", CampaignSpec(n_cases=1, seed=0, spacing_mm=(8.0, 8.0, 8.0)))
    cfg = write_template(root / "campaign.yaml", name="bench", workspace_root=str(root / "ws"), datasets=tuple(str(p) for p in phantoms.dataset_roots))
    config = load_campaign(cfg)
    layout = WorkspaceLayout(root / "ws")
    catalog = Catalog(layout.catalog)
    case = phantoms.cases[0]
    ct = read_ct(phantoms.root / case.image_path)
    pseudo = read_label(phantoms.root / case.ground_truth_path)
    heat = np.zeros((len(config.organ_table), *ct.shape), np.uint8)
    ids = [f"Bench_{i:05d}" for i in range(n_cases)]
    packages = {}
    for i in range(answered, min(answered + annotators + 1, n_cases)):
        packages[ids[i]] = write_work_package(layout.work_packages(ids[i]), ids[i], 0, ct, pseudo, heat, ("liver",), config.organ_table).package_id
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        "round": 0, "position": np.arange(1, n_cases + 1), "case_id": ids, "dataset": "Dataset001_Bench",
        "score": np.sort(rng.random(n_cases))[::-1], "organs": [["liver", "pancreas"]] * n_cases,
        "package_id": [packages.get(c, f"r000-{i:012x}") for i, c in enumerate(ids)],
    })
    frame["work_package"] = [str(layout.work_package(c, p)) for c, p in zip(frame.case_id, frame.package_id)]
    catalog.write("queue", "round_000", frame)
    for start in range(0, answered, 50):
        rows = [{"submission_id": f"s{i:06d}", "case_id": ids[i], "status": "accepted", "kind": "revised", "round": 0, "annotator": f"dr_{i % 7}",
                 "sha256": f"{i:064x}", "entry": f"e{i}", "entry_mtime_ns": i} for i in range(start, min(start + 50, answered))]
        catalog.write("submissions", f"intake_{start:08d}", pd.DataFrame(rows))
    # round 0 through the state machine's steps, as a round run takes it
    transition(catalog, 0, "opened", "bench", training_cases=0, training_set_sha256="", cases_refused=0)
    transition(catalog, 0, "trained", "bench", members_trained=0)
    transition(catalog, 0, "predicted", "bench", cases_predicted=n_cases, cases_with_errors=0)
    transition(catalog, 0, "queued", f"{n_cases} cases queued", queued=n_cases)
    secrets = {}
    for k in range(annotators):
        secrets[f"dr_{k:02d}"] = add_annotator(layout.annotators, f"dr_{k:02d}")[1]
    return cfg, layout, secrets


def serve(cfg: Path, layout: WorkspaceLayout, port: int):
    import uvicorn

    from alqa_dagster.serve.app import create_app
    from alqa_dagster.serve.state import ServeSettings

    app = create_app(ServeSettings(layout, load_campaign(cfg)))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server


def call(conn: http.client.HTTPConnection, method: str, path: str, token: str | None = None, body: bytes | None = None, ctype: str = "application/json") -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if body is not None:
        headers["Content-Type"] = ctype
    conn.request(method, path, body=body, headers=headers)
    r = conn.getresponse()
    return r.status, r.read()


def timed(conn, repeat: int, *args) -> tuple[float, float, bytes]:
    times, data = [], b""
    for _ in range(repeat):
        t0 = time.perf_counter()
        status, data = call(conn, *args)
        times.append(time.perf_counter() - t0)
        assert status == 200, (args[:2], status, data[:300])
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(0.95 * len(times)))], data


def synthetic_abdomen(shape: tuple[int, int, int], seed: int = 0):
    """A CT (HU, float32), its label (organ-table values) and attention (1, i, j, k) on one RAS-flipped grid of ``shape``."""
    from alqa_core.organs import DEFAULT_ORGAN_TABLE as T

    rng = np.random.default_rng(seed)
    nx, ny, nz = shape
    affine = np.array([[-400.0 / nx, 0, 0, 200.0], [0, -400.0 / ny, 0, 200.0], [0, 0, 300.0 / nz, -150.0], [0, 0, 0, 1]])
    x, y, z = np.ogrid[:nx, :ny, :nz]

    def ellipsoid(c, r):  # centre and radii as fractions of the grid
        return sum(((a - cc * n) / (rr * n)) ** 2 for a, cc, rr, n in zip((x, y, z), c, r, shape)) < 1

    label = np.zeros(shape, np.uint8)
    organs = [("liver", (0.33, 0.45, 0.57), (0.19, 0.15, 0.23)), ("spleen", (0.70, 0.51, 0.6), (0.08, 0.07, 0.15)),
              ("kidney_right", (0.37, 0.66, 0.4), (0.06, 0.05, 0.13)), ("kidney_left", (0.64, 0.66, 0.4), (0.06, 0.05, 0.13)),
              ("stomach", (0.62, 0.37, 0.63), (0.1, 0.08, 0.13)), ("pancreas", (0.53, 0.53, 0.5), (0.1, 0.025, 0.05)),
              ("aorta", (0.51, 0.59, 0.5), (0.02, 0.02, 0.47)), ("inferior_vena_cava", (0.45, 0.59, 0.5), (0.018, 0.018, 0.47)),
              ("gallbladder", (0.43, 0.39, 0.5), (0.03, 0.025, 0.07))]
    for name, c, r in organs:
        label[ellipsoid(c, r)] = T.value_of(name)
    body = ellipsoid((0.5, 0.5, 0.5), (0.45, 0.37, 10.0))
    ct = np.where(body, 20.0, -1000.0).astype(np.float32) + (label > 0) * np.float32(40) + rng.normal(0, 12, shape).astype(np.float32)
    heat = np.zeros((1, *shape), np.uint8)
    liver = label == T.value_of("liver")
    heat[0][(liver ^ ellipsoid((0.33, 0.45, 0.57), (0.2, 0.16, 0.24))) & (x < 0.3 * nx)] = 180  # a shell on one side of the liver
    heat[0][ellipsoid((0.70, 0.51, 0.75), (0.025, 0.025, 0.035))] = 90  # a blob at the spleen's top
    return ct, label, heat, affine


def viewer_bench(args) -> int:
    """The viewer's load time in headless Chromium beside the download of the same bytes (see the module's docstring)."""
    import shutil
    import urllib.request

    from alqa_core.organs import DEFAULT_ORGAN_TABLE as T
    from alqa_core.volume import CTVolume, LabelMap

    shape = tuple(int(v) for v in args.shape.split(","))
    browser_path, driver_path = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
    if not (browser_path and driver_path):
        print("chromium and chromedriver are needed (bash scripts/services.sh install)")
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        cfg, layout, secrets = build(Path(tmp), 1, 0, 1)
        ct, label, heat, affine = synthetic_abdomen(shape)
        case = "Bench_00000"
        package = write_work_package(layout.work_packages(case), case, 0, CTVolume(ct, affine), LabelMap(label, affine), heat, ("liver", "spleen"), T)
        del ct, label, heat
        catalog = Catalog(layout.catalog)
        queue = catalog.read("queue")
        queue.loc[0, "package_id"] = package.package_id
        queue.loc[0, "work_package"] = str(package.folder)
        catalog.write("queue", "round_000", queue)
        sizes = {f: (package.folder / f).stat().st_size for f in ("image.nii.gz", "pseudo_label.nii.gz", "attention.nii.gz")}
        print(f"package {shape[0]}x{shape[1]}x{shape[2]} written in {time.perf_counter() - t0:.1f} s: "
              + ", ".join(f"{f} {n / 2**20:.1f} MiB" for f, n in sizes.items()))
        server = serve(cfg, layout, args.port)
        url = f"http://127.0.0.1:{args.port}"
        name, secret = next(iter(secrets.items()))
        driver = _chromium(browser_path, driver_path)
        rows, downloads, py_downloads = [], [], []
        try:
            driver.get(url + "/")
            _wait(driver, "return !document.getElementById('login').hidden")
            driver.find_element("id", "login-name").send_keys(name)
            driver.find_element("id", "login-token").send_keys(secret)
            driver.find_element("id", "login-button").click()
            for r in range(args.repeat):
                if r:
                    driver.get(url + "/")  # a fresh page: nothing of the last open is kept
                _wait(driver, f"return !!document.querySelector(\"#queue tbody tr[data-case='{case}']\")")
                driver.find_element("css selector", f"#queue tbody tr[data-case='{case}']").click()
                driver.execute_script(f"AlqaViewer.skipUnusedGradient = {'false' if args.full_gradient else 'true'}")
                driver.find_element("id", "open-button").click()
                _wait(driver, "return !!window.alqaViewerTiming || document.getElementById('message').className.includes('bad')", 900)
                timing = driver.execute_script("return window.alqaViewerTiming")
                if not timing:
                    raise RuntimeError("the viewer did not open: " + driver.find_element("id", "message").text)
                rows.append(timing)
                # the same three files, downloaded by the same page with the same token (inflated by the browser, as for the viewer)
                downloads.append(driver.execute_async_script(
                    "const done = arguments[0]; const m = window.alqa.viewer.manifest; const h = {Authorization: 'Bearer ' + window.alqa.token};"
                    "const t = performance.now(); Promise.all(['image', 'pseudo_label', 'attention'].map((k) => fetch(m.volumes[k].url, {headers: h, cache: 'no-store'})"
                    ".then((r) => r.arrayBuffer()))).then(() => done(performance.now() - t));"))
                token = driver.execute_script("return window.alqa.token")
                manifest = driver.execute_script("return window.alqa.viewer.manifest")
                t1 = time.perf_counter()
                for k in ("image", "pseudo_label", "attention"):
                    req = urllib.request.Request(url + manifest["volumes"][k]["url"], headers={"Authorization": f"Bearer {token}", "Accept-Encoding": "gzip"})
                    urllib.request.urlopen(req, timeout=600).read()
                py_downloads.append((time.perf_counter() - t1) * 1000)
            renderer = driver.execute_script("const gl = window.alqa.viewer.nv.gl; const x = gl.getExtension('WEBGL_debug_renderer_info');"
                                             "return x ? gl.getParameter(x.UNMASKED_RENDERER_WEBGL) : gl.getParameter(gl.RENDERER);")
        finally:
            driver.quit()
            server.should_exit = True
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    dl, py = statistics.median(downloads), statistics.median(py_downloads)
    print(f"WebGL renderer: {renderer}; NiiVue's unused gradient volume {'built' if args.full_gradient else 'skipped (as the page does)'}")
    print(f"\nopening one {shape[0]}x{shape[1]}x{shape[2]} case (CT, label, attention) in the viewer, median of {len(rows)} cold opens:")
    print(f"{'step':<52} {'ms':>9} {'x download':>11}")
    for label_, key in (("fetch (download + browser's gzip inflate, NiiVue attached)", "fetch_ms"), ("parse (NIfTI -> NiiVue images)", "parse_ms"),
                        ("GPU (textures, colour/gradient passes, drawing, 1st frame)", "gpu_ms"), ("ready to edit (performance.now() around the load)", "total_ms")):
        print(f"{label_:<52} {med[key]:9.0f} {med[key] / dl:11.2f}")
    print(f"{'download the same bytes in the page (baseline)':<52} {dl:9.0f} {1.0:11.2f}")
    print(f"{'download the same bytes, raw gzip, Python urllib':<52} {py:9.0f} {py / dl:11.2f}")
    print("every open: " + ", ".join(f"{r['total_ms'] / 1000:.2f} s" for r in rows))
    return 0


def _chromium(browser_path: str, driver_path: str):
    import os

    os.environ.setdefault("SE_OFFLINE", "true")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser_path
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1500,1250", "--use-angle=swiftshader",
                "--enable-unsafe-swiftshader", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_script_timeout(900)
    return driver


def _wait(driver, script: str, timeout: float = 120) -> None:
    end = time.time() + timeout
    while not driver.execute_script(script):
        if time.time() > end:
            raise TimeoutError(script)
        time.sleep(0.05)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--viewer", action="store_true", help="time the browser viewer opening one large case instead of the routes")
    p.add_argument("--shape", default="512,512,300", help="with --viewer: the case's grid")
    p.add_argument("--full-gradient", action="store_true", help="with --viewer: let NiiVue build its unused 3D gradient volume (the page skips it)")
    p.add_argument("--cases", type=int, default=10_000)
    p.add_argument("--answered", type=int, default=2_000)
    p.add_argument("--annotators", type=int, default=20)
    p.add_argument("--repeat", type=int, default=50)
    p.add_argument("--port", type=int, default=18765)
    args = p.parse_args()
    if args.viewer:
        args.repeat = args.repeat if "--repeat" in sys.argv else 3
        return viewer_bench(args)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        cfg, layout, secrets = build(Path(tmp), args.cases, args.answered, args.annotators)
        print(f"campaign: {args.cases} queued cases, {args.answered} answered, {args.annotators} annotators (built in {time.perf_counter() - t0:.1f} s)")
        server = serve(cfg, layout, args.port)
        conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=120)
        name, secret = next(iter(secrets.items()))
        _, body = call(conn, "POST", "/auth/token", body=f"username={name}&password={secret}&grant_type=password".encode(), ctype="application/x-www-form-urlencoded")
        token = json.loads(body)["access_token"]
        base, base95, _ = timed(conn, args.repeat * 4, "GET", "/auth/")
        rows = [("GET /auth/ (baseline)", base, base95, "")]
        first_t0 = time.perf_counter()
        _, first = call(conn, "POST", "/activelearning/alqa_priority", token, b'{"client_id": "user-xyz"}')
        first_s = time.perf_counter() - first_t0
        for label, args_ in [
            ("GET /auth/token/valid", ("GET", "/auth/token/valid", token)),
            ("GET /info/", ("GET", "/info/", token)),
            ("POST /activelearning/alqa_priority", ("POST", "/activelearning/alqa_priority", token, b'{"client_id": "user-xyz"}')),
            ("GET /train/?check_if_running=true", None),
            ("GET /datastore/?output=all", ("GET", "/datastore/?output=all", token)),
        ]:
            if args_ is None:
                continue
            repeat = max(5, args.repeat // 5) if "output=all" in label else args.repeat
            med, p95, data = timed(conn, repeat, *args_)
            rows.append((label, med, p95, f"{len(data) / 1024:.0f} KiB" if len(data) > 4096 else ""))
        # cold: something changed (here an inbox entry for a case far down the queue), so the worklist is re-read
        cold = []
        queue = Catalog(layout.catalog).read("queue").sort_values("position")
        for k in range(5):
            row = queue.iloc[-1 - k]
            write_submission(layout.inbox, row.case_id, "dr_elsewhere", None, "confirmed", package=row.package_id)
            time.sleep(0.6)  # past the fingerprint's settle window (a change within it is re-read anyway)
            t1 = time.perf_counter()
            assert call(conn, "POST", "/activelearning/alqa_priority", token, b"{}")[0] == 200
            cold.append(time.perf_counter() - t1)
        rows.append(("POST /activelearning after a change", statistics.median(cold), max(cold), "(worklist re-read)"))
        # each annotator's first "Next sample": a different case each (leases), its image checksummed once
        spread = []
        for other, sec in list(secrets.items())[1:]:
            _, b = call(conn, "POST", "/auth/token", body=f"username={other}&password={sec}&grant_type=password".encode(), ctype="application/x-www-form-urlencoded")
            t = json.loads(b)["access_token"]
            t1 = time.perf_counter()
            _, b = call(conn, "POST", "/activelearning/alqa_priority", t, b"{}")
            spread.append((time.perf_counter() - t1, json.loads(b)["case_id"]))
        server.should_exit = True
        core = []
        for _ in range(max(5, args.repeat // 5)):
            t1 = time.perf_counter()
            work = read_worklist(Catalog(layout.catalog), layout.inbox)
            core.append(time.perf_counter() - t1)
    print(f"\nfirst POST /activelearning (cold: catalog read + image sha256): {first_s * 1000:.1f} ms -> {json.loads(first)['case_id']}")
    print(f"\n{'route':<40} {'median ms':>10} {'p95/max':>8} {'x baseline':>11}  size")
    for label, med, p95, size in rows:
        print(f"{label:<40} {med * 1000:10.2f} {p95 * 1000:8.2f} {med / base:11.1f}  {size}")
    med_core = statistics.median(core)
    print(f"{'read_worklist() alone (core, in process)':<40} {med_core * 1000:10.2f} {'':>8} {med_core / base:11.1f}  {len(work.items)} items")
    cases = [c for _, c in spread]
    print(f"\n{len(spread)} more annotators' first Next sample: median {statistics.median([s for s, _ in spread]) * 1000:.1f} ms, "
          f"{len(set(cases))} distinct cases (leases spread them): {cases[0]} .. {cases[-1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
