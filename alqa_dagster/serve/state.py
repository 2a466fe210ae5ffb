"""What one ``alqa serve`` process holds: its settings, a key drawn at start, the annotators' leases, file checksums.

Nothing here is written to disk: the server's only writes are inbox entries
and QA grades, through alqa_core. The key signs access tokens and image
capabilities (:mod:`.ids`), so both die with the process, as do logouts
(tokens ended before their time). Leases (:mod:`.leases`) steer readers who
ask for "Next sample" together to different cases and say who holds a case.
"""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from alqa_core.annotation.intake.worklist import Worklist, read_worklist, worklist_fingerprint
from alqa_core.catalog import Catalog
from alqa_core.config.campaign import CampaignConfig
from alqa_core.workspace import WorkspaceLayout
from alqa_dagster.serve.leases import Leases


@dataclass(frozen=True)
class ServeSettings:
    layout: WorkspaceLayout
    campaign: CampaignConfig
    #: False: ``--no-auth`` (loopback only); every write is attributed to ``local_annotator``
    auth: bool = True
    local_annotator: str = ""
    #: lifetime of an access token from ``POST /auth/token`` (3D Slicer logs in again by itself)
    token_hours: float = 12.0
    #: how long "Next sample" keeps a case for the annotator it was given to
    lease_minutes: float = 30.0
    #: request bodies of every route but the label uploads and /infer are refused beyond this
    max_body_bytes: int = 2**20

    @property
    def max_upload_bytes(self) -> int:
        """``submissions.max_file_mb``: the sensor's limit, applied while the upload streams in."""
        return int(self.campaign.submissions.max_file_mb * 2**20)


def is_loopback(host: str | None) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(str(host)).is_loopback
    except ValueError:
        return False


class ServeState:
    """Per-process state shared by the routes (thread-safe: sync routes run in a thread pool)."""

    def __init__(self, settings: ServeSettings):
        self.settings = settings
        self.key = secrets.token_bytes(32)
        self.leases = Leases(settings.lease_minutes)
        #: access tokens ended by a logout before their expiry: MAC -> expiry (dropped once expired)
        self._logged_out: dict[str, float] = {}
        self._checksums: dict[tuple[str, int, int], str] = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        self._worklist: tuple[tuple, Worklist] | None = None
        self._derived: dict[str, tuple[int, object]] = {}

    @property
    def layout(self) -> WorkspaceLayout:
        return self.settings.layout

    @property
    def catalog(self) -> Catalog:
        return Catalog(self.settings.layout.catalog)

    def worklist(self) -> Worklist:
        """The round's worklist, re-read only when the catalog's tables or the inbox changed (see ``worklist_fingerprint``)."""
        key = worklist_fingerprint(self.catalog, self.layout.inbox)
        with self._lock:
            if key is not None and self._worklist is not None and self._worklist[0] == key:
                return self._worklist[1]
        work = read_worklist(self.catalog, self.layout.inbox, self.duckdb())
        if key is not None:
            with self._lock:
                self._worklist = (key, work)
        return work

    def duckdb(self):
        """This worker thread's DuckDB connection: opening one costs more than the reads it serves."""
        con = getattr(self._local, "duckdb", None)
        if con is None:
            import duckdb

            con = self._local.duckdb = duckdb.connect(":memory:")
        return con

    def derived(self, name: str, work: Worklist, build):
        """``build(work)``, computed once per worklist (e.g. the JSON of ``/datastore/?output=all``)."""
        with self._lock:
            found = self._derived.get(name)
            if found is not None and found[0] == id(work):
                return found[1]
        value = build(work)
        with self._lock:
            self._derived[name] = (id(work), value)
        return value

    def hold(self, case_id: str, annotator: str) -> None:
        self.leases.hold(case_id, annotator)

    def held_by(self) -> dict[str, str]:
        return self.leases.held_by()

    def log_out(self, mac: str, expiry: float) -> None:
        """End one access token now (the page's "Log out"); remembered until it would have expired anyway."""
        now = time.time()
        with self._lock:
            for gone in [m for m, until in self._logged_out.items() if until < now]:
                del self._logged_out[gone]
            self._logged_out[mac] = expiry

    def logged_out(self, mac: str) -> bool:
        with self._lock:
            return mac in self._logged_out

    def sha256(self, path: Path) -> str:
        """The file's sha256, computed once per (path, mtime, size): package files never change."""
        st = Path(path).stat()
        key = (str(path), st.st_mtime_ns, st.st_size)
        with self._lock:
            known = self._checksums.get(key)
        if known:
            return known
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(2**20), b""):
                h.update(block)
        with self._lock:
            self._checksums[key] = h.hexdigest()
        return h.hexdigest()
