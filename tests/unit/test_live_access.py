"""Who may read the live view: origin parsing, the Origin decision, tokens, the listen address."""

from __future__ import annotations

import pytest

from streamflow.errors import LiveTokenRequired, SettingsError
from streamflow.live.access import (
    Origin,
    bearer_token,
    is_loopback,
    origin_allowed,
    own_origin,
    parse_allowed_origins,
    parse_origin,
    require_token_off_loopback,
    token_matches,
)


@pytest.mark.parametrize(("text", "origin"), [
    ("http://127.0.0.1:3001", Origin("http", "127.0.0.1", 3001)),
    ("HTTPS://Dash.Example.COM", Origin("https", "dash.example.com", 443)),
    ("https://dash.example.com:443", Origin("https", "dash.example.com", 443)),
    ("http://localhost", Origin("http", "localhost", 80)),
    ("http://[::1]:8080", Origin("http", "::1", 8080)),
    ("  https://xn--bcher-kva.example  ", Origin("https", "xn--bcher-kva.example", 443)),
])
def test_origins_are_normalised(text, origin):
    assert parse_origin(text) == origin


@pytest.mark.parametrize(("text", "why"), [
    ("dash.example.com", "scheme"),
    ("ftp://dash.example.com", "scheme"),
    ("ws://dash.example.com", "scheme"),
    ("null", "scheme"),
    ("*", "scheme"),
    ("https://", "host"),
    ("https://exa mple.com", "host"),
    ("https://dash.example.com/", "path"),
    ("https://dash.example.com/live", "path"),
    ("https://dash.example.com?x=1", "path"),
    ("https://dash.example.com:", "path"),
    ("https://user@dash.example.com", "user"),
    ("https://dash.example.com:99999", "port"),
    ("https://dash.example.com:0", "port"),
    ("https://[::1", "IPv6"),
    ("https://dash.example.com:http", "port"),
])
def test_a_malformed_origin_says_what_is_wrong(text, why):
    with pytest.raises(ValueError, match=why):
        parse_origin(text)


def test_the_allowed_origins_setting_is_a_comma_separated_list():
    assert parse_allowed_origins(None) == ()
    assert parse_allowed_origins("") == ()
    assert parse_allowed_origins(" https://a.example , http://b.example:8080,") == (
        Origin("https", "a.example", 443), Origin("http", "b.example", 8080))


def test_a_malformed_allowed_origin_is_a_settings_error_naming_variable_and_entry():
    with pytest.raises(SettingsError) as raised:
        parse_allowed_origins("https://ok.example,https://bad.example/path")
    message = str(raised.value)
    assert "STREAMFLOW_LIVE_ALLOWED_ORIGINS" in message
    assert "'https://bad.example/path'" in message
    assert "scheme://host[:port]" in message


OWN = Origin("http", "127.0.0.1", 3001)
LISTED = (Origin("https", "dash.example.com", 443),)


@pytest.mark.parametrize(("header", "allowed"), [
    ("http://127.0.0.1:3001", True),             # the page itself
    ("https://dash.example.com", True),           # listed
    ("https://dash.example.com:443", True),       # listed, default port spelled out
    (None, True),                                 # no Origin: not a browser
    ("http://127.0.0.1:3002", False),             # another port is another origin
    ("https://127.0.0.1:3001", False),            # another scheme too
    ("http://localhost:3001", False),             # and another name for the same host
    ("https://evil.example", False),
    ("http://dash.example.com", False),
    ("null", False),                              # sandboxed frame, file:// page
    ("garbage", False),
])
def test_the_origin_decision(header, allowed):
    assert origin_allowed(header, OWN, LISTED) is allowed


def test_own_origin_follows_the_host_header_and_the_scheme():
    assert own_origin("ws", "127.0.0.1:3001", token_set=False) == OWN
    assert own_origin("wss", "live.example:8443", token_set=True) == Origin(
        "https", "live.example", 8443)
    assert own_origin("ws", "[::1]:3001", token_set=False) == Origin("http", "::1", 3001)
    assert own_origin("ws", None, token_set=True) is None
    assert own_origin("ws", "live.example/x", token_set=True) is None


def test_without_a_token_only_a_loopback_host_is_our_own_origin():
    # DNS rebinding: evil.example now resolves to 127.0.0.1, so its page is "same origin"
    # with the Host header its handshake carries.
    assert own_origin("ws", "evil.example:3001", token_set=False) is None
    assert not origin_allowed("http://evil.example:3001",
                              own_origin("ws", "evil.example:3001", token_set=False), ())
    assert own_origin("ws", "evil.example:3001", token_set=True) == Origin(
        "http", "evil.example", 3001)


@pytest.mark.parametrize(("header", "token"), [
    ("Bearer s3cret", "s3cret"),
    ("bearer   s3cret  ", "s3cret"),
    ("Basic czNjcmV0", None),
    ("Bearer", None),
    ("s3cret", None),
    (None, None),
])
def test_bearer_token(header, token):
    assert bearer_token(header) == token


def test_token_matches_any_presented_token_exactly():
    assert token_matches("s3cret", [None, "s3cret"])
    assert not token_matches("s3cret", [None, None])
    assert not token_matches("s3cret", ["s3cre", "s3cret ", "S3CRET", ""])


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.0.0.2", True), ("localhost", True), ("LOCALHOST", True),
    ("::1", True), ("[::1]", True), ("::ffff:127.0.0.1", True),
    ("0.0.0.0", False), ("::", False), ("", False), ("192.168.1.10", False),
    ("my-host", False), ("localhost.example.com", False),
])
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


def test_listening_beyond_loopback_needs_a_token():
    require_token_off_loopback("127.0.0.1", None)
    require_token_off_loopback("0.0.0.0", "s3cret")
    for token in (None, ""):
        with pytest.raises(LiveTokenRequired, match="STREAMFLOW_LIVE_TOKEN"):
            require_token_off_loopback("0.0.0.0", token)
