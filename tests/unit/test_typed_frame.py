"""The contract step's batch as PostgreSQL's COPY (FORMAT csv, FORCE_QUOTE *) writes it, read
into the frame it validates: every text a producer can send comes back as sent."""

import pandas as pd
import pytest

from streamflow.microbatch.batch import _TYPED_COLUMNS, typed_frame


def _csv(*rows: dict) -> bytes:
    """Rows as PostgreSQL writes them: every value quoted (quotes doubled), NULL bare."""
    def cell(value) -> str:
        if value is None:
            return ""
        if isinstance(value, bool):
            value = "t" if value else "f"
        return '"' + str(value).replace('"', '""') + '"'
    return "".join(",".join(cell(row.get(name)) for name in _TYPED_COLUMNS) + "\n"
                   for row in rows).encode()


ROW = {"ingest_seq": 1, "event_id": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", "schema_version": 1,
       "event_type": "login", "user_id": "u-1", "email_hash": "ab" * 32,
       "email_masked": "j***@example.com", "occurred_at": 1_765_000_000_000_000,
       "country": "DE", "device": "mobile", "success": True, "amount_cents": None,
       "ingested_at": 1_765_000_000_100_000, "needs_payload": False}


@pytest.mark.parametrize("text", [
    "", "NULL", "NaN", "null", "N/A", '"', 'a,"b"\nc\r\n', "ünïcödé 🦄", "x" * 3_000_000,
    '"' * 100_000,  # doubled in the CSV: a row past the parser's 1 MB default block
])
def test_any_text_comes_back_as_sent(text):
    frame = typed_frame(_csv(ROW, {**ROW, "ingest_seq": 2, "user_id": text}, ROW))
    assert frame["user_id"].tolist() == ["u-1", text, "u-1"]
    assert str(frame["user_id"].dtype) == "string"


def test_null_is_missing_and_types_are_pandas_nullable():
    frame = typed_frame(_csv(ROW, {**ROW, "ingest_seq": 2, "user_id": None, "success": None,
                                   "amount_cents": 7, "schema_version": None}))
    assert frame["user_id"].isna().tolist() == [False, True]
    assert frame["success"].tolist() == [True, pd.NA]
    assert frame["amount_cents"].tolist() == [pd.NA, 7]
    assert str(frame["schema_version"].dtype) == "Int64"
    assert frame["occurred_at"].tolist() == [ROW["occurred_at"]] * 2


def test_an_empty_batch_has_every_column():
    assert list(typed_frame(b"").columns) == _TYPED_COLUMNS
