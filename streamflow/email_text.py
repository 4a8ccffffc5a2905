"""E-mail addresses inside any text, found in one linear pass and masked where they stand.

An address is a run of address characters with an ``@`` (or its percent-escape ``%40``) in it.
Anything else separates addresses: ``,`` ``;`` ``/`` ``'`` ``<>`` quotes, whitespace, the
``:`` of ``mailto:``, the ``?=&`` of a query string, and the percent-escapes of all of these
(``%2C``, ``%20``). So ``bob@x.org,carl@y.net`` is two addresses, ``mailto:bob@x.org?cc=eve@y.net``
is two, and ``eve%40y.net`` is one. Each is masked as ``pii.mask_email`` masks the address
alone (``c***@y.net``), keeping the ``@`` as it was written and the text around it.

Between two ``@`` with nothing but address characters (``bob@x.org.carl@y.net``), where one
address ends and the next begins cannot be known: the whole stretch is taken as the second
local part and hidden (``b***@x***@y.net``). An ``@`` with nothing before it (``@handle``)
hides nothing; a run with no dot after its first ``@`` (``user@localhost``, ``a@b``) is no
address, as before.
"""

from __future__ import annotations

import re
import string

# What a local part or a domain can be made of, as far as masking goes: ASCII letters and
# digits, ``._%+-`` (the characters addresses use in practice) and any non-ASCII character but
# whitespace (internationalised addresses). Not ``*``: a masked local part (``j***``) ends a
# run, so masking masked text changes nothing.
_ASCII_ADDRESS = frozenset(string.ascii_letters + string.digits + "._%+-")
_ASCII_SEPARATORS = "".join(f"\\x{code:02x}" for code in range(128)
                            if chr(code) not in _ASCII_ADDRESS)
_CHAR = rf"[^{_ASCII_SEPARATORS}\s]"
_HEX = "[0-9A-Fa-f]"


def _escapes_of(byte_values: set[int]) -> str:
    """A pattern for the percent-escapes of these bytes, either case: ``%(?:2[BbDdEe]|...)``.
    Every alternative is three characters long, so the pattern may stand in a look-behind."""
    alternatives = []
    for high in range(16):
        lows = [b & 15 for b in sorted(byte_values) if b >> 4 == high]
        if lows:
            digits = {f"{high:X}", f"{high:x}"}
            low_digits = {f"{low:X}" for low in lows} | {f"{low:x}" for low in lows}
            alternatives.append(f"[{''.join(sorted(digits))}][{''.join(sorted(low_digits))}]")
    return f"%(?:{'|'.join(alternatives)})"


# %2B, %41, %C3 ...: an escaped address character (bytes of 0x80 and up are UTF-8 of
# non-ASCII characters). %40 is not one: it is the @.
_ADDRESS_ESCAPE = _escapes_of({ord(c) for c in _ASCII_ADDRESS} | set(range(128, 256)))
_AT = "(?:@|%40)"
# One address character: an escape of one, or a character that is no escape's start (a "%"
# before two hex digits begins an escape and is never a character of its own).
_TOKEN = rf"(?:{_ADDRESS_ESCAPE}|(?!%{_HEX}{{2}}){_CHAR})"
# A run may start only where a run starts: on a token boundary (not within %XX) and after a
# token that is no address character (an escaped separator such as %2C, or a separator).
_RUN_START = (rf"(?!(?<=%){_HEX}{{2}})(?!(?<=%{_HEX}){_HEX})"
              rf"(?:(?<=%{_HEX}{{2}})(?<!{_ADDRESS_ESCAPE})|(?<!%{_HEX}{{2}})(?<!{_CHAR}))")
# A run of address characters with at least one @ in it.
#
# Linear in the length of the text, by construction (a replayed line can be any length, and
# a backtracking pattern here once took 8 s for one 64 KiB field):
# - every repetition is possessive (*+, ++) and each token is decided by at most three
#   characters, so an attempt never backtracks: it reads its run once and stops at the first
#   character that is neither an address character nor an @;
# - _RUN_START, a constant number of fixed-width look-arounds, lets an attempt begin only at
#   the start of a run; everywhere else it fails at once. An attempt that finds no @ in its
#   run fails, the positions inside that run are refused by _RUN_START, and the search goes
#   on after the run: each character is read by at most one attempt.
ADDRESS_RUN_RE = re.compile(rf"{_RUN_START}{_TOKEN}*+(?:{_AT}{_TOKEN}*+)++")
_AT_SPLIT_RE = re.compile(f"({_AT})")
_ESCAPE_RE = re.compile(f"%{_HEX}{{2}}")
HIDDEN = "***"  # what stands for a local part after its first character


def may_hold_address(text: str) -> bool:
    """False for nearly every string of an event: no pattern runs on it at all."""
    return "@" in text or "%40" in text


def masked_local(local: str) -> str:
    """``jane.doe`` -> ``j***``: the first character (an escape counts as one), lower case."""
    first = local[:3] if _ESCAPE_RE.match(local) else local[:1]
    return f"{first.lower()}{HIDDEN}"


def mask_addresses(text: str) -> str:
    """``text`` with every e-mail address in it masked (``j***@example.com``), wherever it
    stands and whatever separates it from the next."""
    if not may_hold_address(text):
        return text
    return ADDRESS_RUN_RE.sub(_masked_run, text)


def _masked_run(match: re.Match[str]) -> str:
    run = match.group(0)
    # [local, @, between, @, between, ..., @, domain]: split on the @ tokens only, since in a
    # run a "%" before two hex digits always begins an escape.
    parts = _AT_SPLIT_RE.split(run)
    locals_ = parts[0:-1:2]
    after_first_at = run[len(parts[0]) + len(parts[1]):]
    if not any(locals_) or "." not in after_first_at and "%2e" not in after_first_at.lower():
        return run  # nothing to hide ("@handle.org"), or no domain ("user@localhost")
    masked = []
    for local, at in zip(locals_, parts[1::2], strict=True):
        masked += [masked_local(local) if local else "", at]
    masked.append(parts[-1].lower())
    return "".join(masked)
