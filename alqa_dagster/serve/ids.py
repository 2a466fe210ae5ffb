"""Image ids as MONAI Label clients see them: ``<case>.<package>.<capability>``, validated before any path is built.

- ``case`` and ``package`` follow the workspace's rules (``[A-Za-z0-9_-]``,
  ``r<round>-<12 hex>``), checked by the workspace's own validators (the
  ones ``alqa submit`` and the intake use), so no id can name a path outside
  the workspace.
- ``capability`` is an HMAC of ``case.package`` under a key drawn when the
  server starts. 3D Slicer downloads ``/datastore/image`` with plain urllib,
  without the bearer token; that one route accepts either a valid token or a
  valid capability. The capability reaches only those who were handed the id
  by an authenticated call (``/activelearning``, ``/datastore``), it names
  one immutable package image, and it dies with the server process (a
  restart hands out new ids; Slicer's download cache, keyed by file name and
  checksum, still reuses what it fetched). Authenticated routes ignore it, so
  a label submitted after a restart is still taken.
- ``case`` alone (or ``case.package``) is accepted where a bearer token is
  given: the case's newest package is meant when none is named.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass

from alqa_core.errors import AlqaInputError
from alqa_core.workspace import validate_case_id, validate_package_id

_CAP_RE = re.compile(r"^[a-z2-7]{26}$")


class BadId(ValueError):
    """An id that does not follow the rules (the message says which); answered with 400."""


@dataclass(frozen=True)
class ImageRef:
    case_id: str
    package_id: str = ""
    capability: str = ""

    def image_id(self) -> str:
        return ".".join(p for p in (self.case_id, self.package_id, self.capability) if p)


def capability(key: bytes, case_id: str, package_id: str) -> str:
    """130 bits of HMAC-SHA256 over ``case.package``, base32 (lower case, no padding)."""
    mac = hmac.new(key, f"{case_id}.{package_id}".encode(), hashlib.sha256).digest()
    return base64.b32encode(mac).decode().lower()[:26]


def image_ref(key: bytes, case_id: str, package_id: str) -> ImageRef:
    return ImageRef(case_id, package_id, capability(key, case_id, package_id))


def parse_image_id(text: str) -> ImageRef:
    """``case[.package[.capability]]`` -> ImageRef; BadId when any part breaks its rule."""
    if not isinstance(text, str) or not text or len(text) > 128:
        raise BadId(f"invalid image id {text!r}: expected <case>[.<package>[.<capability>]]")
    parts = text.split(".")
    if len(parts) > 3:
        raise BadId(f"invalid image id {text!r}: expected <case>[.<package>[.<capability>]]")
    case_id, package_id, cap = (parts + ["", ""])[:3]
    try:
        check_case_id(case_id)
        if len(parts) > 1:
            check_package_id(package_id)
    except BadId as exc:
        raise BadId(f"invalid image id {text!r}: {exc}") from None
    if len(parts) > 2 and not _CAP_RE.fullmatch(cap):
        raise BadId(f"invalid image id {text!r}: malformed capability")
    return ImageRef(case_id, package_id, cap)


def capability_ok(key: bytes, ref: ImageRef) -> bool:
    return bool(ref.package_id and ref.capability) and hmac.compare_digest(ref.capability, capability(key, ref.case_id, ref.package_id))


def check_case_id(text: str) -> str:
    """:func:`alqa_core.workspace.validate_case_id`, refused as a BadId (400)."""
    try:
        return validate_case_id(text)
    except AlqaInputError as exc:
        raise BadId(exc.reason) from None


def check_package_id(text: str) -> str:
    """:func:`alqa_core.workspace.validate_package_id`, refused as a BadId (400)."""
    try:
        return validate_package_id(text)
    except AlqaInputError as exc:
        raise BadId(exc.reason) from None
