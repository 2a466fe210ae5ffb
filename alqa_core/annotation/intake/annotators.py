"""Annotator credentials for ``alqa serve``: one secret per annotator, kept only as a salted scrypt hash.

Layout (``<workspace>/annotators/``):

- ``<name>.json``: the annotator's active credential: ``credential_id``,
  ``created_at``, the scrypt parameters, the salt and the hash. The secret
  itself is printed once by ``alqa annotators add`` and stored nowhere.
- ``revoked/<name>-<credential_id>.json``: a revoked credential, kept with its
  ``revoked_at``. Once this file exists the credential is dead, even if a crash
  left ``<name>.json`` behind; revoking again finishes the job.

A new credential never replaces an active one (created with a hard link,
which fails if the name is taken): revoke first. Files are written with
mode 0600 (:func:`alqa_core.io.atomic.atomic_path` creates them so).
Secrets are 256-bit random, so scrypt here guards against a stolen store
more than against guessing; verifying one costs ~50 ms, which is why
``alqa serve`` exchanges it once for a short-lived access token.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from alqa_core.errors import AlqaInputError
from alqa_core.io.atomic import atomic_path, atomic_write_text

#: an annotator's name: the same alphabet as a case id, so it is a safe file name and never holds a dot
ANNOTATOR_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: scrypt cost (RFC 7914 interactive parameters: 16 MiB, ~50 ms)
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
_MAXMEM = 64 * 2**20


@dataclass(frozen=True)
class Annotator:
    """One credential's public record (no secret, no hash)."""

    name: str
    credential_id: str
    created_at: str
    revoked_at: str = ""

    @property
    def active(self) -> bool:
        return not self.revoked_at


def validate_annotator(name: str, path: str | Path | None = None) -> str:
    if not isinstance(name, str) or not ANNOTATOR_RE.fullmatch(name):
        raise AlqaInputError(path, f"invalid annotator name {name!r}: must match [A-Za-z0-9_-]{{1,64}}")
    return name


def _hash(secret: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(secret.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=_MAXMEM, dklen=32)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _revoked_path(folder: Path, name: str, credential_id: str) -> Path:
    return folder / "revoked" / f"{name}-{credential_id}.json"


def _read(path: Path) -> dict:
    try:
        record = json.loads(path.read_text())
        missing = [k for k in ("name", "credential_id", "created_at", "salt", "hash", "n", "r", "p") if k not in record]
        if missing:
            raise KeyError(", ".join(missing))
        return record
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AlqaInputError(path, f"not a readable annotator credential ({exc})") from exc


def _active_record(folder: Path, name: str) -> dict | None:
    path = Path(folder) / f"{validate_annotator(name)}.json"
    if not path.is_file():
        return None
    record = _read(path)
    if record["name"] != name or _revoked_path(Path(folder), name, str(record["credential_id"])).exists():
        return None
    return record


def _public(record: dict, revoked_at: str = "") -> Annotator:
    return Annotator(str(record["name"]), str(record["credential_id"]), str(record["created_at"]), revoked_at or str(record.get("revoked_at", "")))


def add_annotator(folder: str | Path, name: str) -> tuple[Annotator, str]:
    """A new credential for ``name``: its record and the secret, which is returned once and stored nowhere."""
    folder = Path(folder)
    validate_annotator(name)
    if _active_record(folder, name) is not None:
        raise AlqaInputError(folder / f"{name}.json", f"annotator {name} already has an active token; revoke it first (alqa annotators revoke {name})")
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_bytes(16)
    record = {
        "name": name,
        "credential_id": uuid.uuid4().hex[:12],
        "created_at": _now(),
        "kdf": "scrypt",
        "n": SCRYPT_N,
        "r": SCRYPT_R,
        "p": SCRYPT_P,
        "salt": salt.hex(),
        "hash": _hash(secret, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P).hex(),
    }
    target = folder / f"{name}.json"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    with atomic_path(folder / f".new-{name}.json") as tmp:
        tmp.write_text(json.dumps(record, indent=1))
    staged = folder / f".new-{name}.json"
    try:
        if target.exists():  # a revoked credential's leftover (crash during revoke): keep it in revoked/
            _finish_revoke(folder, _read(target))
        os.link(staged, target)  # never replaces an existing credential
    except FileExistsError as exc:
        raise AlqaInputError(target, f"annotator {name} was given a token meanwhile; revoke it first") from exc
    finally:
        staged.unlink(missing_ok=True)
    return _public(record), secret


def _finish_revoke(folder: Path, record: dict, when: str | None = None) -> Annotator:
    name, cid = str(record["name"]), str(record["credential_id"])
    done = _revoked_path(folder, name, cid)
    if done.exists():
        revoked = json.loads(done.read_text()).get("revoked_at", "")
    else:
        revoked = when or _now()
        atomic_write_text(done, json.dumps({**record, "revoked_at": revoked}, indent=1))
    active = folder / f"{name}.json"
    if active.exists() and str(_read(active)["credential_id"]) == cid:
        active.unlink()
    return _public(record, revoked)


def revoke_annotator(folder: str | Path, name: str) -> Annotator:
    """Revoke ``name``'s active credential (its record moves to ``revoked/``; access tokens die with it)."""
    folder = Path(folder)
    path = folder / f"{validate_annotator(name)}.json"
    if not path.is_file():
        raise AlqaInputError(path, f"annotator {name} has no active token")
    return _finish_revoke(folder, _read(path))


def list_annotators(folder: str | Path) -> list[Annotator]:
    """Every credential, active and revoked, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    out = []
    for path in folder.glob("*.json"):
        if path.name.startswith("."):
            continue
        record = _read(path)
        if not _revoked_path(folder, str(record["name"]), str(record["credential_id"])).exists():
            out.append(_public(record))
    for path in (folder / "revoked").glob("*.json") if (folder / "revoked").is_dir() else ():
        record = _read(path)
        out.append(_public(record, str(record.get("revoked_at", "")) or "unknown"))
    return sorted(out, key=lambda a: (a.created_at, a.name, a.credential_id))


def active_annotator(folder: str | Path, name: str) -> Annotator | None:
    """``name``'s active credential, or None (unknown, revoked, or an invalid name)."""
    if not isinstance(name, str) or not ANNOTATOR_RE.fullmatch(name):
        return None
    record = _active_record(Path(folder), name)
    return None if record is None else _public(record)


def verify_secret(folder: str | Path, name: str, secret: str) -> Annotator | None:
    """``name``'s active credential if ``secret`` is its secret, else None (the comparison is constant-time)."""
    if not isinstance(secret, str) or not secret or len(secret) > 1024:
        return None
    if not isinstance(name, str) or not ANNOTATOR_RE.fullmatch(name):
        return None
    record = _active_record(Path(folder), name)
    if record is None:
        return None
    try:
        digest = _hash(secret, bytes.fromhex(record["salt"]), int(record["n"]), int(record["r"]), int(record["p"]))
    except (ValueError, TypeError) as exc:
        raise AlqaInputError(Path(folder) / f"{name}.json", f"damaged annotator credential ({exc})") from exc
    return _public(record) if hmac.compare_digest(digest.hex(), str(record["hash"])) else None


__all__ = [
    "ANNOTATOR_RE",
    "Annotator",
    "active_annotator",
    "add_annotator",
    "list_annotators",
    "revoke_annotator",
    "validate_annotator",
    "verify_secret",
]
