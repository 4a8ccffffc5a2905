"""PII masking: keyed HMAC of e-mails, masked display form, and the key's one home.

A plain SHA-256 of an e-mail is reversible by hashing a list of known addresses; an HMAC
with a secret key is not. The clear e-mail never leaves the producer process.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from streamflow.errors import PiiKeyMissing
from streamflow.settings import Settings

MIN_KEY_BYTES = 16


def normalise_email(email: str) -> str:
    return email.strip().lower()


def email_hash(key: bytes, email: str) -> str:
    return hmac.digest(key, normalise_email(email).encode(), hashlib.sha256).hex()


def mask_email(email: str) -> str:
    """``jane.doe@example.com`` -> ``j***@example.com`` (nothing of the local part but one char)."""
    local, _, domain = normalise_email(email).partition("@")
    return f"{(local[:1] or '?')}***@{domain or 'invalid'}"


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
