"""Showing rejected bytes safely: whatever a producer sent, a terminal or a JSON consumer
gets printable text (control characters escaped, non-UTF-8 as hex), never raw bytes."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

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
