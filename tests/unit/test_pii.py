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
