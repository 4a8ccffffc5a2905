"""Showing message bytes safely (dead letters, `streamflow tail`): whatever a producer sent, a
terminal or a JSON consumer gets printable text (control characters escaped, non-UTF-8 as
hex, escapes or base64), never raw bytes."""

from __future__ import annotations

import base64
import unicodedata
from dataclasses import dataclass
from typing import NamedTuple

# Unicode categories that move the cursor, hide text or reorder it (Cc control, Cf format
# such as U+202E RIGHT-TO-LEFT OVERRIDE, Zl/Zp line and paragraph separators).
_UNSAFE_CATEGORIES = {"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"}


@dataclass(frozen=True)
class SafePayload:
    encoding: str  # "utf-8", "hex" or "empty"
    text: str      # printable: escapes for unsafe characters, hex for bytes
    size: int      # bytes


def escape(text: str, *, keep_newlines: bool = False) -> str:
    out = []
    for ch in text:
        if keep_newlines and ch in "\n\t":
            out.append(ch)
        elif unicodedata.category(ch) in _UNSAFE_CATEGORIES:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else
                       f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(ch)
    return "".join(out)


def safe_payload(payload: bytes | None, *, keep_newlines: bool = False) -> SafePayload:
    if not payload:
        return SafePayload("empty", "", 0)
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return SafePayload("hex", payload.hex(" "), len(payload))
    return SafePayload("utf-8", escape(text, keep_newlines=keep_newlines), len(payload))


def preview(payload: bytes | None, width: int = 60) -> str:
    """One line for a table: text (escaped) or ``hex:`` bytes, cut at ``width``."""
    safe = safe_payload(payload)
    if safe.encoding == "empty":
        return "(empty)"
    text = safe.text if safe.encoding == "utf-8" else "hex: " + safe.text
    return text if len(text) <= width else text[: width - 1] + "…"


def one_line(payload: bytes | None, width: int) -> str:
    """One terminal line for any bytes: text with unsafe characters escaped, each byte that is
    not UTF-8 as ``\\xNN`` in place, cut at ``width`` characters with the full size said."""
    if payload is None:
        return "(null)"
    if not payload:
        return "(empty)"
    head = payload[: 4 * width]  # a character is at most 4 bytes: enough for `width` of them
    text = escape(head.decode("utf-8", "backslashreplace"))
    if len(head) == len(payload) and len(text) <= width:
        return text
    return f"{text[:width]}… [{len(payload):,} bytes]"


class JsonBytes(NamedTuple):
    """Bytes for a JSON document: the text when they are UTF-8, else their base64."""

    text: str | None
    encoding: str | None  # "utf-8", "base64", or None for no bytes at all (null)


def json_bytes(payload: bytes | None) -> JsonBytes:
    """Lossless (the text encoded, or the base64 decoded, is the very bytes). JSON escapes
    every control character itself (``json.dumps`` all non-ASCII too): no escaping here."""
    if payload is None:
        return JsonBytes(None, None)
    try:
        return JsonBytes(payload.decode("utf-8"), "utf-8")
    except UnicodeDecodeError:
        return JsonBytes(base64.b64encode(payload).decode("ascii"), "base64")

