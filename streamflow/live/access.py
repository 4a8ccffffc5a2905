"""Who may read the live view: the Origin of a WebSocket handshake, the token, the address.

Pure functions over header strings, so unit tests call them without a server. The CLI parses
STREAMFLOW_LIVE_ALLOWED_ORIGINS and checks the listen address before it starts; the server asks
`refusal()` on every handshake.

Why the Origin check: a browser lets any web page open a WebSocket to any address, the
user's own 127.0.0.1 included, and read what comes back (cross-site WebSocket hijacking). Only
the Origin header, which a page cannot forge, tells the server which site is asking.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from collections.abc import Iterable
from typing import NamedTuple
from urllib.parse import urlsplit

from streamflow.errors import LiveTokenRequired, SettingsError

ALLOWED_ORIGINS_VAR = "STREAMFLOW_LIVE_ALLOWED_ORIGINS"
TOKEN_VAR = "STREAMFLOW_LIVE_TOKEN"
# The page trades ?token= for this cookie (HttpOnly, SameSite=Strict, sent to /ws only).
TOKEN_COOKIE = "streamflow_live_token"
DEFAULT_PORTS = {"http": 80, "https": 443}
# A DNS name in the ASCII form browsers put in Origin (punycode for international names).
_HOST_NAME = re.compile(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*")


class Origin(NamedTuple):
    """A web origin (RFC 6454), normalised: lower-case scheme and host, the port explicit."""

    scheme: str
    host: str  # an IPv6 address without its brackets
    port: int


def parse_origin(text: str) -> Origin:
    """`scheme://host[:port]` as an Origin; ValueError saying what is wrong otherwise."""
    parts = urlsplit(text.strip())  # ValueError for broken [IPv6] brackets
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise ValueError("the port must be a number in 1-65535")
    if parts.scheme not in DEFAULT_PORTS:
        raise ValueError("the scheme must be http or https")
    host = parts.hostname or ""
    if not (_HOST_NAME.fullmatch(host) or _is_ip(host)):
        raise ValueError("no valid host")
    if "@" in parts.netloc:
        raise ValueError("an origin has no user name")
    if parts.path or parts.query or parts.fragment or text.strip().endswith(("?", "#", ":")):
        raise ValueError("an origin has no path, query or fragment, not even a trailing /")
    return Origin(parts.scheme, host, port or DEFAULT_PORTS[parts.scheme])


def parse_allowed_origins(value: str | None) -> tuple[Origin, ...]:
    """STREAMFLOW_LIVE_ALLOWED_ORIGINS: comma-separated origins; empty entries are skipped."""
    origins = []
    for entry in (value or "").split(","):
        if not entry.strip():
            continue
        try:
            origins.append(parse_origin(entry))
        except ValueError as exc:
            raise SettingsError(
                f"{ALLOWED_ORIGINS_VAR}: {entry.strip()!r} is not an origin ({exc}); expected "
                "scheme://host[:port], for example https://dashboard.example.com:8443") from None
    return tuple(origins)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def is_loopback(host: str) -> bool:
    """localhost, 127.0.0.0/8 or ::1 (also IPv4-mapped): reachable from this machine only."""
    name = host.strip().removeprefix("[").removesuffix("]").lower()
    if name == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False  # any other name may resolve to a public interface
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def require_token_off_loopback(host: str, token: str | None) -> None:
    """Refuse to listen beyond this machine without a token: the Origin check keeps other web
    sites out, but anyone who can reach the port with a non-browser client could read the
    stream (dead-letter previews included)."""
    if not token and not is_loopback(host):
        raise LiveTokenRequired(
            f"refusing to serve the live view on {host} without a token: set {TOKEN_VAR} "
            "(or listen on 127.0.0.1)")


def own_origin(scheme: str, host_header: str | None, *, token_set: bool) -> Origin | None:
    """The origin the page was served from, as the handshake's Host header names it.

    Without a token the live view listens on loopback only (see require_token_off_loopback),
    so a Host that is not a loopback name can only come from a reverse proxy or from DNS
    rebinding (a foreign site whose name now resolves to 127.0.0.1, hence "same origin" with
    itself): neither counts as our own origin then; a proxy's origin goes in the allow list.
    """
    if not host_header:
        return None
    http_scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
    try:
        origin = parse_origin(f"{http_scheme}://{host_header}")
    except ValueError:
        return None
    if not token_set and not is_loopback(origin.host):
        return None
    return origin


def origin_allowed(origin_header: str | None, own: Origin | None,
                   allowed: Iterable[Origin]) -> bool:
    """The handshake's Origin is our own or listed. A handshake with no Origin is allowed:
    every browser sends one on a WebSocket handshake, so its absence means a non-browser client
    (the websockets library, curl, a benchmark), which no web page can drive; it still needs
    the token when one is set. "null" (sandboxed frames, file:// pages) is foreign."""
    if origin_header is None:
        return True
    try:
        origin = parse_origin(origin_header)
    except ValueError:
        return False
    return origin == own or origin in tuple(allowed)


def bearer_token(authorization: str | None) -> str | None:
    """The token of `Authorization: Bearer <token>` (the scheme name is case-insensitive)."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def token_matches(expected: str, presented: Iterable[str | None]) -> bool:
    """Any presented token equals the expected one. Compared as SHA-256 digests in constant
    time, so neither the content nor the length of the token leaks through timing."""
    want = hashlib.sha256(expected.encode()).digest()
    return any(hmac.compare_digest(hashlib.sha256(token.encode()).digest(), want)
               for token in presented if token is not None)
