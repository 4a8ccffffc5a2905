"""PII masking: keyed HMAC of e-mails, masked display form, and the key's one home.

A plain SHA-256 of an e-mail is reversible by hashing a list of known addresses; an HMAC
with a secret key is not. The clear e-mail never leaves the producer process: an address
anywhere else in a replayed record (inside text, nested objects and arrays, object keys) is
masked by ``mask_json``, each address of a list on its own (streamflow/email_text.py), to the
form ``mask_email`` gives it alone. Only the event's own ``email`` gets a keyed hash: one in
free text would tie records together by people who are not the event's subject, and an
object key's tag is only there to keep two keys apart.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from streamflow import email_text
from streamflow.errors import PiiKeyMissing
from streamflow.settings import Settings

MIN_KEY_BYTES = 16
# Hex characters of the keyed tag on an object key that held an e-mail: addresses that mask
# alike (ana@x.org, al@x.org -> a***@x.org) stay two keys, and one address is the same key in
# every record. 32 bits make a clash within one object unlikely; without the key the tag
# tells nothing about the address.
KEY_TAG_CHARS = 8


def normalise_email(email: str) -> str:
    return email.strip().lower()


def email_hash(key: bytes, email: str) -> str:
    return hmac.digest(key, normalise_email(email).encode(), hashlib.sha256).hex()


def mask_email(email: str) -> str:
    """An event's own ``email``: ``jane.doe@example.com`` -> ``j***@example.com``.

    Nothing before the last ``@`` but its first character is kept, so a field holding more
    than an address (``Jane <jane@x.org>``, ``a@x.org,b@y.org``) keeps no name and no other
    local part; an address after that ``@`` (``…?cc=eve%40y.org``) is masked as in text.
    """
    local, at, domain = normalise_email(email).rpartition("@")
    if not at:
        local, domain = domain, ""
    shown = email_text.masked_local(local) if local else f"?{email_text.HIDDEN}"
    return f"{shown}@{mask_emails_in(domain) or 'invalid'}"


def mask_emails_in(text: str) -> str:
    """``text`` with every e-mail address in it masked (see streamflow/email_text.py)."""
    return email_text.mask_addresses(text)


def mask_json(value: object, key: bytes) -> object:
    """A decoded JSON value with every e-mail address masked, at any depth: strings in objects
    and arrays, addresses inside longer text, and object keys, which also get a keyed tag
    (``a***@x.org#1f2e3d4c``, see KEY_TAG_CHARS). Numbers, booleans and null are kept as
    they are; ``value`` itself is not changed.

    Recursive: the record is then encoded by orjson, which stops at 254 levels, well inside
    Python's recursion limit; a deeper record cannot be sent either way.
    """
    if isinstance(value, str):
        return mask_emails_in(value)
    if isinstance(value, dict):
        return {(_masked_key(name, key) if email_text.may_hold_address(name) else name):
                mask_json(item, key) for name, item in value.items()}
    if isinstance(value, list):
        return [mask_json(item, key) for item in value]
    return value


def _masked_key(name: str, key: bytes) -> str:
    masked = mask_emails_in(name)
    if masked == name:  # an @ but no address ("@handle", "user@localhost")
        return name
    tag = hmac.digest(key, name.encode(), hashlib.sha256).hex()[:KEY_TAG_CHARS]
    return f"{masked}#{tag}"


def key_file(settings: Settings) -> Path:
    return settings.home_dir / "secrets" / "pii.key"


def generate_local_key(settings: Settings) -> Path:
    """The local dev stack's key: created once (mode 0600) and kept under STREAMFLOW_HOME."""
    path = key_file(settings)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
    return path


def load_key(settings: Settings) -> bytes:
    """STREAMFLOW_PII_KEY, else the local stack's generated key; refuse to go on without."""
    if settings.pii_key is not None:
        key = settings.pii_key.get_secret_value().encode()
    elif key_file(settings).exists():
        key = key_file(settings).read_text().strip().encode()
    else:
        raise PiiKeyMissing(
            "STREAMFLOW_PII_KEY is not set: set it to a secret of at least 16 bytes "
            "(e.g. `openssl rand -hex 32`), or run `streamflow up`, which generates one for "
            "the local stack"
        )
    if len(key) < MIN_KEY_BYTES:
        raise PiiKeyMissing(f"STREAMFLOW_PII_KEY is too short ({len(key)} bytes, need "
                            f"{MIN_KEY_BYTES}+)")
    return key
