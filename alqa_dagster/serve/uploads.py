"""Multipart uploads read as they stream in, stopped at a size limit before the rest is read.

Starlette's own form parser spools any file to disk whatever its size, so the
label uploads are parsed here with python-multipart's push parser (the one
Starlette uses): the declared ``Content-Length`` is checked before a byte is
read, and the bytes counted as they arrive, so an oversized or endless
upload is refused (413) after at most ``limit`` bytes. Text fields are capped
at 1 MiB each. The file goes to a private temporary folder; the caller hands
it to ``write_submission``, which copies it into the inbox atomically.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import anyio
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from alqa_core.annotation.intake.label_files import LABEL_SUFFIXES

FIELD_LIMIT = 2**20


class TooLarge(Exception):
    """The upload passed the limit (answered with 413; the rest is never read)."""


class BadUpload(ValueError):
    """A malformed upload (answered with 400)."""


@dataclass
class Upload:
    fields: dict[str, str] = field(default_factory=dict)
    file_path: Path | None = None
    #: the file part's name as the client gave it, reduced to its last component
    file_name: str = ""
    file_bytes: int = 0


def client_file_name(raw: str) -> str:
    """The last component of a client's file name (MONAI's client sends its full local path, maybe a Windows one)."""
    return raw.replace("\\", "/").rsplit("/", 1)[-1].strip()


def label_file_suffix(name: str) -> str | None:
    """The label type of a client's file name (``.seg.nrrd``, ``.nii.gz``, ``.nrrd``, ``.nii``), or None."""
    lower = name.lower()
    return next((s for s in LABEL_SUFFIXES if lower.endswith(s)), None)


def declared_length(request: Request) -> int | None:
    raw = request.headers.get("content-length")
    if raw is None:
        return None
    if not raw.strip().isdigit():
        raise BadUpload(f"Content-Length {raw!r} is not a number")
    return int(raw)


async def drain(request: Request, limit: int) -> int:
    """Read and drop a body of at most ``limit`` bytes (a request whose content alqa does not need)."""
    declared = declared_length(request)
    if declared is not None and declared > limit:
        raise TooLarge(f"{declared} bytes declared, the limit is {limit}")
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise TooLarge(f"more than {limit} bytes")
    return total


async def read_multipart(request: Request, file_field: str, limit: int, workdir: Path) -> Upload:
    """Parse a multipart body: text fields, and the part ``file_field`` written under ``workdir``; TooLarge past ``limit``."""
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or not options.get(b"boundary"):
        raise BadUpload(f"expected a multipart/form-data body with a '{file_field}' file, got {content_type.decode(errors='replace') or 'none'}")
    declared = declared_length(request)
    if declared is not None and declared > limit + FIELD_LIMIT:
        raise TooLarge(f"{declared} bytes declared, the limit is {limit}")
    upload = Upload()
    pending: list[bytes] = []
    part: dict = {}
    fh = None

    def on_part_begin():
        part.clear()
        part.update(headers={}, field=b"", value=bytearray())

    def on_header_field(data, start, end):
        part["field"] += data[start:end]

    def on_header_value(data, start, end):
        key = part["field"].lower()
        part["headers"][key] = part["headers"].get(key, b"") + data[start:end]

    def on_header_end():
        part["field"] = b""

    def on_headers_finished():
        nonlocal fh
        _, disposition = parse_options_header(part["headers"].get(b"content-disposition", b""))
        part["name"] = disposition.get(b"name", b"").decode("utf-8", "replace")
        filename = disposition.get(b"filename")
        part["is_file"] = part["name"] == file_field and filename is not None
        if part["is_file"]:
            if upload.file_path is not None:
                raise BadUpload(f"more than one '{file_field}' file part")
            upload.file_name = client_file_name(filename.decode("utf-8", "replace"))
            upload.file_path = Path(workdir) / "upload.bin"
            fh = open(upload.file_path, "wb")  # noqa: SIM115 (closed once the stream ends)

    def on_part_data(data, start, end):
        chunk = data[start:end]
        if part.get("is_file"):
            upload.file_bytes += len(chunk)
            if upload.file_bytes > limit:
                raise TooLarge(f"the file passed the {limit}-byte limit")
            pending.append(bytes(chunk))
        else:
            part["value"] += chunk
            if len(part["value"]) > FIELD_LIMIT:
                raise BadUpload(f"form field {part.get('name')!r} is over {FIELD_LIMIT} bytes")

    def on_part_end():
        if not part.get("is_file") and part.get("name"):
            upload.fields[part["name"]] = part["value"].decode("utf-8", "replace")

    callbacks = {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_headers_finished": on_headers_finished, "on_part_data": on_part_data,
        "on_part_end": on_part_end,
    }
    parser = MultipartParser(options[b"boundary"], callbacks)
    total = 0
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit + FIELD_LIMIT:
                raise TooLarge(f"the body passed the {limit}-byte limit")
            parser.write(chunk)
            if pending and fh is not None:
                blocks, pending[:] = list(pending), []
                await anyio.to_thread.run_sync(fh.writelines, blocks)
        parser.finalize()
        if pending and fh is not None:
            fh.writelines(pending)
    except (TooLarge, BadUpload):
        raise
    except Exception as exc:  # python-multipart's MultipartParseError and friends
        raise BadUpload(f"malformed multipart body ({exc})") from exc
    finally:
        if fh is not None:
            fh.close()
    if upload.file_path is None:
        raise BadUpload(f"no '{file_field}' file part in the upload")
    return upload


def private_workdir() -> tempfile.TemporaryDirectory:
    """A temporary folder for one upload, removed when the request ends."""
    return tempfile.TemporaryDirectory(prefix="alqa-serve-upload-")
