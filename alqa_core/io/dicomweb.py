"""A DICOMweb client (dicomweb-client) for one service URL: the PACS alqa pulls series from and pushes SEGs to.

``ALQA_DICOMWEB_AUTHORIZATION`` (when set) is sent as the ``Authorization``
header, so a token never has to appear on a command line.
"""

from __future__ import annotations

import os
from typing import Mapping
from urllib.parse import urlparse

from alqa_core.errors import AlqaInputError

AUTH_ENV = "ALQA_DICOMWEB_AUTHORIZATION"
#: seconds to wait for the PACS per request (connect, read)
TIMEOUT_S = (10.0, 300.0)
#: WADO-RS Accept: "as stored". Asking for the default (Explicit VR Little Endian) makes a PACS
#: transcode; Orthanc 1.10 without its GDCM plugin answers HTTP 500 for JPEG 2000 slices.
AS_STORED = (("application/dicom", "*"),)


def dicomweb_client(url: str, headers: Mapping[str, str] | None = None):
    """A ``DICOMwebClient`` for ``url`` (the service root, e.g. ``http://pacs:8042/dicom-web``)."""
    from dicomweb_client.api import DICOMwebClient  # requests and friends load only when a PACS is used

    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise AlqaInputError(url, "a DICOMweb URL must be http(s)://host[:port]/path-to-the-dicomweb-root")
    sent = dict(headers or {})
    if os.environ.get(AUTH_ENV) and "Authorization" not in sent:
        sent["Authorization"] = os.environ[AUTH_ENV]
    return DICOMwebClient(url=url.rstrip("/"), headers=sent or None, timeout=TIMEOUT_S)


__all__ = ["AS_STORED", "AUTH_ENV", "dicomweb_client"]
