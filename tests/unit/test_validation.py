import uuid

import pandas as pd
import pytest

from streamflow import contract
from streamflow.contract import MISSING_CHECK, NO_VALUE, TYPE_CHECK, Failure, describe
from streamflow.validation import frame, validate

NOW = pd.Timestamp("2026-11-25T12:00:00Z")


def event(**overrides):
    base = {"event_id": str(uuid.uuid4()), "schema_version": 1, "event_type": "login",
            "user_id": "user-000001", "email_hash": "ab" * 32, "email_masked": "j***@example.com",
            "occurred_at": "2026-11-25T11:59:58.000Z", "country": "DE", "device": "mobile",
            "success": True}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not ...}


def check(*payloads):
    """(valid rows, {row: its failures as text}): what a person reads in the dead letter."""
    valid, failures = failures_of(*payloads)
    return valid, {i: [str(f) for f in found] for i, found in failures.items()}


def failures_of(*payloads):
    df, type_errors = frame(list(payloads), {"ingested_at": [NOW] * len(payloads)})
    return validate(df, type_errors)


def test_a_valid_batch_passes_whole():
    valid, reasons = check(event(), event(event_type="purchase", success=..., amount_cents=5))
    assert len(valid) == 2 and reasons == {}


@pytest.mark.parametrize(("overrides", "expected"), [
    ({"event_type": "teleport"}, "event_type: isin"),
    ({"schema_version": 99}, "schema_version: equal_to(1)"),
    ({"schema_version": "1"}, "schema_version: expected int (64-bit), got '1'"),
    ({"user_id": ...}, "user_id: missing"),
    ({"email_hash": "5f4dcc3b5aa765d61d8327deb882cf99"}, "email_hash: str_matches"),
    ({"email_masked": "jane@example.com"}, "email_masked: str_matches"),
    # `$` ends the text: Python's re also matched before a final newline.
    ({"email_hash": "ab" * 32 + "\n"}, "email_hash: str_matches"),
    ({"event_id": str(uuid.uuid4()) + "\n"}, "event_id: str_matches"),
    ({"email_masked": "j***@example.com\n"}, "email_masked: str_matches"),
    ({"email_masked": "j***@exa\vmple.com"}, "email_masked: str_matches"),  # RE2's \s lacks \v
    ({"occurred_at": "2026-11-25T13:00:00Z"}, "not_in_the_future"),
    ({"occurred_at": "1970-01-01T00:00:00Z"}, "occurred_at: greater_than_or_equal_to"),
    ({"occurred_at": "not a time"},
     "occurred_at: expected an ISO-8601 time (years 1678-2261), got 'not a time'"),
    ({"occurred_at": "9999-12-31T23:59:59Z"}, "occurred_at: expected an ISO-8601 time"),
    ({"schema_version": 2**63}, "schema_version: expected int (64-bit)"),
    ({"country": "XX"}, "country: isin"),
    ({"device": "fridge"}, "device: isin"),
    ({"success": ...}, "login_has_success"),
    ({"event_type": "purchase", "success": ..., "amount_cents": -500},
     "amount_cents: greater_than(0)"),
    ({"event_type": "purchase", "success": ...}, "purchase_has_amount"),
    ({"amount_cents": True}, "amount_cents: expected int (64-bit), got True"),
])
def test_each_broken_rule_is_a_reason(overrides, expected):
    valid, reasons = check(event(), event(**overrides))
    assert len(valid) == 1
    assert list(reasons) == [1]
    assert any(r.startswith(expected) for r in reasons[1]), reasons[1]


def test_every_failure_of_a_row_is_reported():
    _, reasons = check(event(event_type="teleport", device="fridge", email_hash="x"))
    assert len(reasons[0]) == 3


def test_a_rows_reasons_do_not_depend_on_its_neighbours():
    """A row is judged alone: the same reasons wherever it sits and whatever else is in the
    batch (a batch-level check leaking into rows would break replay and reprocessing)."""
    bad = event(country="XX", device="fridge")
    alone = check(bad)[1][0]
    first = check(bad, event(schema_version=99), event())[1]
    last = check(event(), event(event_type="teleport"), bad)[1]
    assert first[0] == last[2] == alone
    assert len(alone) == 2 and first[1] != alone


def test_a_value_of_the_wrong_type_is_one_reason_not_also_missing():
    _, reasons = check(event(schema_version="1", device=None))
    assert reasons[0] == ["schema_version: expected int (64-bit), got '1'", "device: missing"]


def test_a_failure_is_a_record_of_column_check_and_value():
    _, failures = failures_of(event(schema_version="1", device=None, country="XX",
                                    success=...))
    countries = f"isin({list(contract.COUNTRIES)})"
    assert failures[0] == [
        Failure(check=TYPE_CHECK, column="schema_version", value="1",
                expected="int (64-bit)"),
        Failure(check="login_has_success"),
        Failure(check=countries, column="country", value="XX"),
        Failure(check=MISSING_CHECK, column="device"),
    ]


def test_a_value_holding_the_separator_stays_one_failure():
    """The reason text joins failures with "; ": a value holding it is still one record (the
    text was split on it, and one failure became two)."""
    _, failures = failures_of(event(country="A; B", device="x (got y)"))
    assert [(f.column, f.value) for f in failures[0]] == [
        ("country", "A; B"), ("device", "x (got y)")]
    assert describe(failures[0]).count("; ") == 2  # between the two, and inside one value


def test_failures_are_counted_without_their_values():
    """Type failures too: one line per field, not one per distinct wrong value."""
    a, b = (Failure(check=TYPE_CHECK, column="amount_cents", value=v, expected="int (64-bit)")
            for v in ("1", "2"))
    assert a.summary == b.summary == "amount_cents: expected int (64-bit)"
    assert Failure(check="isin", column="country", value="XX").summary == "country: isin"


def test_a_stored_failure_renders_as_when_it_was_found():
    found = [Failure(check=TYPE_CHECK, column="user_id", value={"a": [1] * 40},
                     expected="str"),
             Failure(check="greater_than(0)", column="amount_cents", value=-5),
             Failure(check="not_in_the_future"),
             Failure(check="str_matches", column="email_hash")]
    stored = [Failure.from_json(f.as_json()) for f in found]
    assert [str(f) for f in stored] == [str(f) for f in found]
    assert stored[3].value is NO_VALUE and len(found[0].shown_value) == 60
