"""The Dataverse sandbox's `$batch` wire format: multipart/mixed requests in, responses out.

Follows Microsoft's "Execute batch operations using the Web API" (MicrosoftDocs/powerapps-docs,
developer/data-platform/webapi/execute-batch-operations-using-web-api.md; crm-apis.md §4.2) and
OData v4 §11.7: a batch holds operations (`application/http` parts) and change sets (nested
`multipart/mixed` parts whose operations carry `Content-ID`). Responses come in request order;
a successful change set answers with a nested `changesetresponse_` part, one part per operation
with its Content-ID; a failed change set answers with one `application/http` part: its error.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)
REASONS = {
    200: "OK",
    201: "Created",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    412: "Precondition Failed",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class MalformedBatch(ValueError):
    """The body is not a batch this service can read (answered 400 for the whole request)."""


@dataclass
class Operation:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    content_id: str | None = None


@dataclass
class ChangeSet:
    operations: list[Operation] = field(default_factory=list)


@dataclass
class Answer:
    """One operation's HTTP answer inside the batch response."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None  # JSON-able, or None for no content
    content_id: str | None = None


def boundary_of(content_type: str) -> str:
    m = BOUNDARY.search(content_type or "")
    if not content_type.lower().startswith("multipart/mixed") or m is None:
        raise MalformedBatch(
            "The content type of the batch request must be multipart/mixed with a boundary."
        )
    return m.group(1)


def split_parts(text: str, boundary: str) -> list[str]:
    """The body parts between `--boundary` delimiters (text normalised to LF line ends)."""
    delimiter = "--" + boundary
    segments = text.split(delimiter)
    if len(segments) < 2:
        raise MalformedBatch("The batch body has no parts for its boundary.")
    parts: list[str] = []
    for segment in segments[1:]:
        if segment.startswith("--"):
            return parts
        _, _, rest = segment.partition("\n")  # the rest of the delimiter line
        parts.append(rest[:-1] if rest.endswith("\n") else rest)
    raise MalformedBatch("The batch body has no closing delimiter.")


def split_head(part: str) -> tuple[dict[str, str], str]:
    head, _, body = part.partition("\n\n")
    headers: dict[str, str] = {}
    for line in head.split("\n"):
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return headers, body


def _operation(part: str, in_change_set: bool) -> Operation:
    mime, inner = split_head(part)
    if not mime.get("content-type", "").lower().startswith("application/http"):
        raise MalformedBatch("Each batch operation must have Content-Type application/http.")
    request_line, _, rest = inner.lstrip("\n").partition("\n")
    bits = request_line.split()
    if len(bits) != 3 or not bits[2].startswith("HTTP/"):
        raise MalformedBatch("An operation in the batch has no valid request line.")
    headers, body = split_head(rest) if rest.strip() else ({}, "")
    method = bits[0].upper()
    if in_change_set and method == "GET":
        raise MalformedBatch("GET requests are not allowed inside a change set.")
    return Operation(method, bits[1], headers, body.strip().encode(), mime.get("content-id"))


def parse_batch(content_type: str, body: bytes) -> list[Operation | ChangeSet]:
    """The batch's items in order: plain operations and change sets."""
    try:
        text = body.decode("utf-8").replace("\r\n", "\n")
    except UnicodeDecodeError:
        raise MalformedBatch("The batch body is not UTF-8.") from None
    items: list[Operation | ChangeSet] = []
    for part in split_parts(text, boundary_of(content_type)):
        headers, inner = split_head(part)
        kind = headers.get("content-type", "")
        if kind.lower().startswith("multipart/mixed"):
            boundary = boundary_of(kind)
            if boundary.startswith("batch"):
                raise MalformedBatch("A batch request cannot contain another batch request.")
            change_set = ChangeSet([_operation(p, True) for p in split_parts(inner, boundary)])
            ids = [op.content_id for op in change_set.operations if op.content_id]
            if len(ids) != len(set(ids)):
                raise MalformedBatch("Content-ID values must be unique within a change set.")
            items.append(change_set)
        else:
            items.append(_operation(part, False))
    return items


def operation_count(items: list[Operation | ChangeSet]) -> int:
    return sum(len(i.operations) if isinstance(i, ChangeSet) else 1 for i in items)


def _http_part(answer: Answer, *, with_content_id: bool) -> list[str]:
    lines = ["Content-Type: application/http", "Content-Transfer-Encoding: binary"]
    if with_content_id and answer.content_id:
        lines.append(f"Content-ID: {answer.content_id}")
    lines += ["", f"HTTP/1.1 {answer.status} {REASONS.get(answer.status, 'Unknown')}"]
    headers = {"OData-Version": "4.0", **answer.headers}
    if answer.body is not None:
        headers["Content-Type"] = "application/json; odata.metadata=minimal"
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append("")
    lines.append(json.dumps(answer.body, separators=(",", ":")) if answer.body is not None else "")
    return lines


def render_batch(results: list[Answer | list[Answer]]) -> tuple[str, bytes]:
    """(Content-Type, body) of a batch response; a list is a successful change set's answers."""
    outer = f"batchresponse_{uuid.uuid4()}"
    lines: list[str] = []
    for result in results:
        lines.append(f"--{outer}")
        if isinstance(result, list):
            inner = f"changesetresponse_{uuid.uuid4()}"
            lines += [f"Content-Type: multipart/mixed; boundary={inner}", ""]
            for answer in result:
                lines.append(f"--{inner}")
                lines += _http_part(answer, with_content_id=True)
            lines.append(f"--{inner}--")
        else:
            # A failed change set answers with one error part and no Content-ID (batch doc examples).
            lines += _http_part(result, with_content_id=False)
    lines.append(f"--{outer}--")
    lines.append("")
    return f"multipart/mixed; boundary={outer}", "\r\n".join(lines).encode()
