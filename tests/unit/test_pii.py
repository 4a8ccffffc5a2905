import copy
import re

import pytest

from streamflow import pii
from streamflow.errors import PiiKeyMissing
from streamflow.settings import load_settings

KEY_A = b"a" * 32
KEY_B = b"b" * 32


def test_hmac_is_stable_for_one_key_and_normalises_the_address():
    assert pii.email_hash(KEY_A, "Jane.Doe@Example.com ") == pii.email_hash(KEY_A,
                                                                          "jane.doe@example.com")
    assert len(pii.email_hash(KEY_A, "x@y.z")) == 64


def test_hmac_differs_across_keys_and_from_plain_sha256():
    import hashlib

    email = "jane.doe@example.com"
    assert pii.email_hash(KEY_A, email) != pii.email_hash(KEY_B, email)
    assert pii.email_hash(KEY_A, email) != hashlib.sha256(email.encode()).hexdigest()


@pytest.mark.parametrize(("email", "masked"), [
    ("jane.doe@example.com", "j***@example.com"),
    ("J@Example.ORG", "j***@example.org"),
    ("@nolocal.com", "?***@nolocal.com"),
])
def test_mask_keeps_one_character_and_the_domain(email, masked):
    assert pii.mask_email(email) == masked


def test_key_from_setting(tmp_path):
    settings = load_settings(STREAMFLOW_HOME=str(tmp_path), STREAMFLOW_PII_KEY="k" * 20)
    assert pii.load_key(settings) == b"k" * 20


def test_no_key_refuses_outside_the_local_stack(tmp_path):
    settings = load_settings(STREAMFLOW_HOME=str(tmp_path), STREAMFLOW_PII_KEY=None)
    with pytest.raises(PiiKeyMissing, match="STREAMFLOW_PII_KEY"):
        pii.load_key(settings)


def test_short_key_is_refused(tmp_path):
    settings = load_settings(STREAMFLOW_HOME=str(tmp_path), STREAMFLOW_PII_KEY="short")
    with pytest.raises(PiiKeyMissing, match="too short"):
        pii.load_key(settings)


def test_local_stack_key_is_generated_once_and_private(tmp_path):
    settings = load_settings(STREAMFLOW_HOME=str(tmp_path), STREAMFLOW_PII_KEY=None)
    path = pii.generate_local_key(settings)
    first = pii.load_key(settings)
    pii.generate_local_key(settings)
    assert pii.load_key(settings) == first
    assert path.stat().st_mode & 0o777 == 0o600


# -- e-mails at any depth (replayed records) --------------------------------------------------

def test_mask_json_masks_strings_in_nested_objects():
    record = {"user": {"profile": {"contact": "jane.doe@example.com", "name": "Jane"}}}
    assert pii.mask_json(record, KEY_A) == {
        "user": {"profile": {"contact": "j***@example.com", "name": "Jane"}}}


def test_mask_json_masks_lists_of_objects_and_nested_lists():
    record = {"to": [{"email": "ana@example.org"}, {"email": "Ben@Corp.Example.NET"}],
              "cc": [["carl@example.co.uk", "no address"]]}
    assert pii.mask_json(record, KEY_A) == {
        "to": [{"email": "a***@example.org"}, {"email": "b***@corp.example.net"}],
        "cc": [["c***@example.co.uk", "no address"]]}


def test_mask_json_masks_a_key_that_is_an_email_and_keeps_keys_apart():
    # ana@ and al@ mask alike: the keyed tag keeps both values.
    record = {"opens": {"ana@example.org": 3, "al@example.org": 5, "@handle": 1}}
    opens = pii.mask_json(record, KEY_A)["opens"]
    assert len(opens) == 3 and sorted(opens.values()) == [1, 3, 5]
    assert opens["@handle"] == 1  # an @ without an address is no e-mail
    tagged = sorted(k for k in opens if k != "@handle")
    assert all(re.fullmatch(r"a\*\*\*@example\.org#[0-9a-f]{8}", k) for k in tagged), tagged
    assert "ana" not in str(opens) and "al@" not in str(opens)


def test_mask_json_masks_an_email_inside_longer_text():
    assert pii.mask_json({"note": "contact alice@example.com today, or <bo.b@x.org>."},
                         KEY_A) == {"note": "contact a***@example.com today, or <***@x.org>."}
    assert pii.mask_json("alice@example.com", KEY_A) == "a***@example.com"


def test_mask_json_leaves_other_scalars_and_the_input_alone():
    record = {"n": 42, "x": 1.5, "ok": True, "none": None, "big": 2**63 - 1, "s": "plain",
              "nested": [0, False, None, {"f": -0.25}]}
    before = copy.deepcopy(record)
    masked = pii.mask_json(record, KEY_A)
    assert masked == record and record == before
    assert masked["ok"] is True and masked["none"] is None and isinstance(masked["n"], int)
    with_mail = {"a": {"b": "x.y@example.com"}}
    pii.mask_json(with_mail, KEY_A)
    assert with_mail == {"a": {"b": "x.y@example.com"}}  # a copy is masked, not the input


def test_mask_json_is_deterministic_with_the_key():
    record = {"by": {"jane.doe@example.com": [{"cc": "contact bob@example.org"}]}}
    assert pii.mask_json(record, KEY_A) == pii.mask_json(record, KEY_A)
    assert pii.mask_json(record, KEY_A) != pii.mask_json(record, KEY_B)  # the key's tag
    # Values are the masked form (unkeyed, like email_masked); only a key's tag is keyed.
    (value,) = pii.mask_json(record, KEY_B)["by"].values()
    assert value == [{"cc": "contact b***@example.org"}]


def test_long_strings_without_an_address_come_back_unchanged():
    # The first pattern retried every start position (~8 s for one 64 KiB field, measured
    # by hand; no timed assertion here): the anchored one scans once.
    for text in ("a" * 65_536, "a@" + "b" * 65_536, "x " * 32_768):
        assert pii.mask_emails_in(text) == text
