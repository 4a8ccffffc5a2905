"""The event contract as a pandera DataFrameModel, and batch validation with every reason.

Validation is lazy: each failing row collects all its failures (type, enum, shape, rules),
which become the dead letter's reason. Rules that involve time compare with the row's own
``ingested_at``, not with the clock, so validating a batch again gives the same answer.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pandas as pd
import pandera.pandas as pa
import pyarrow
from pandera.typing import Series

from streamflow import contract
from streamflow.contract import INT64, MISSING_CHECK, TYPE_CHECK, EventType, Failure

# How far ahead of its ingestion an event's clock may run (client clock skew).
FUTURE_SKEW = timedelta(minutes=5)
# Events older than this are not credible (a default 1970 or year-2000 clock).
OLDEST_CREDIBLE = datetime(2020, 1, 1, tzinfo=UTC)

CONTRACT_COLUMNS = list(contract.FIELDS)
ROW_CHECKS = ("not_in_the_future", "login_has_success", "purchase_has_amount")
_INT_FIELDS = {name for name, (kind, _) in contract.FIELDS.items() if kind is int}
_BOOL_FIELDS = {name for name, (kind, _) in contract.FIELDS.items() if kind is bool}


# Text columns are Arrow strings: pandera's dtype check, its nullability and its str checks
# then run over whole arrays (RE2 regexes in pyarrow compute), not once per value in Python:
# 1.8-2.3 µs a row instead of 4.6 (docs/BENCHMARKS.md, "Where a micro-batch spends its time").
# RE2's `$` is the end of the text (Python's also matched before a final newline).
_ARROW = {"storage": "pyarrow"}


class EventContract(pa.DataFrameModel):
    """Contract v1 (streamflow.contract) for a batch of events."""

    event_id: Series[pd.StringDtype] = pa.Field(  # lower-case here
        str_matches=contract.UUID_RE.pattern, dtype_kwargs=_ARROW)
    schema_version: Series[pd.Int64Dtype] = pa.Field(eq=contract.SCHEMA_VERSION)
    event_type: Series[pd.StringDtype] = pa.Field(isin=[t.value for t in EventType],
                                                  dtype_kwargs=_ARROW)
    user_id: Series[pd.StringDtype] = pa.Field(str_length={"min_value": 1, "max_value": 128},
                                               dtype_kwargs=_ARROW)
    email_hash: Series[pd.StringDtype] = pa.Field(str_matches=contract.EMAIL_HASH_RE.pattern,
                                                  dtype_kwargs=_ARROW)
    email_masked: Series[pd.StringDtype] = pa.Field(
        str_matches=contract.EMAIL_MASKED_RE.pattern, dtype_kwargs=_ARROW)
    occurred_at: Series[pd.DatetimeTZDtype] = pa.Field(
        dtype_kwargs={"unit": "ns", "tz": "UTC"}, ge=pd.Timestamp(OLDEST_CREDIBLE))
    country: Series[pd.StringDtype] = pa.Field(isin=list(contract.COUNTRIES),
                                               dtype_kwargs=_ARROW)
    device: Series[pd.StringDtype] = pa.Field(isin=list(contract.DEVICES), dtype_kwargs=_ARROW)
    success: Series[pd.BooleanDtype] = pa.Field(nullable=True)
    amount_cents: Series[pd.Int64Dtype] = pa.Field(nullable=True, gt=0)

    @pa.dataframe_check(name="not_in_the_future")
    def not_in_the_future(cls, df: pd.DataFrame) -> Series[bool]:
        return ~(df["occurred_at"] > df["ingested_at"] + FUTURE_SKEW).fillna(False)

    @pa.dataframe_check(name="login_has_success")
    def login_has_success(cls, df: pd.DataFrame) -> Series[bool]:
        return (df["event_type"] != EventType.LOGIN.value) | df["success"].notna()

    @pa.dataframe_check(name="purchase_has_amount")
    def purchase_has_amount(cls, df: pd.DataFrame) -> Series[bool]:
        return (df["event_type"] != EventType.PURCHASE.value) | df["amount_cents"].notna()

    class Config:
        strict = False  # batch bookkeeping columns (ingest_seq, kafka_*) ride along


# What a pandas column can hold: int64 and nanosecond timestamps. A value outside is a type
# failure of that row, never an exception that would stop the whole batch.
TIME_RANGE = (pd.Timestamp.min.to_pydatetime().replace(tzinfo=UTC),
               pd.Timestamp.max.to_pydatetime().replace(tzinfo=UTC))
_EXPECTED = {name: kind.__name__ for name, (kind, _) in contract.FIELDS.items()}
_EXPECTED.update({name: "int (64-bit)" for name in _INT_FIELDS},
                 occurred_at="an ISO-8601 time (years 1678-2261)")


def _typed(name: str, value: object) -> object:
    """The value if it has the contract's type, else None (reported as a type failure)."""
    if value is None:
        return None
    if name in _INT_FIELDS:
        return value if type(value) is int and -INT64 <= value < INT64 else None
    if name in _BOOL_FIELDS:
        return value if type(value) is bool else None
    if name == "occurred_at":
        moment = contract.parse_time(value)
        return moment if moment and TIME_RANGE[0] < moment < TIME_RANGE[1] else None
    if name == "event_id" and type(value) is str:
        return value.lower()  # UUIDs are case-insensitive; the sink lands them lower-case
    return value if type(value) is str else None




def typed_fields(payload: dict, type_errors: list[Failure]) -> dict[str, object]:
    """Each contract field of one payload, typed (None when missing or of the wrong type).

    A value of the wrong type adds its failure to ``type_errors``."""
    out = {}
    for name in CONTRACT_COLUMNS:
        raw = payload.get(name)
        value = _typed(name, raw)
        if raw is not None and value is None:
            type_errors.append(Failure(check=TYPE_CHECK, column=name, value=raw,
                                       expected=_EXPECTED[name]))
        out[name] = value
    return out


Failures = dict[int, list[Failure]]  # row position -> every failure of that row


def frame(payloads: list[dict], extra: dict[str, list]) -> tuple[pd.DataFrame, Failures]:
    """A typed DataFrame of ``payloads`` (+ ``extra`` columns) and the type errors per row."""
    type_errors: Failures = defaultdict(list)
    columns: dict[str, list] = {name: [] for name in CONTRACT_COLUMNS}
    for i, payload in enumerate(payloads):
        for name, value in typed_fields(payload, type_errors[i]).items():
            columns[name].append(value)
    return columns_frame(columns, extra), {i: e for i, e in type_errors.items() if e}


# The frame the contract validates, column by column, as Arrow types; pandas holds them as
# its nullable dtypes and Arrow strings (``contract_frame``), whether the batch was read from
# PostgreSQL (streamflow.microbatch.batch) or typed from payloads (``frame``). occurred_at
# arrives as microseconds since the epoch and becomes nanosecond UTC times (the contract's).
ARROW_TYPES = {name: pyarrow.int64() if kind is int or name == "occurred_at"
               else pyarrow.bool_() if kind is bool else pyarrow.large_string()
               for name, (kind, _) in contract.FIELDS.items()}
_PANDAS_TYPES = {pyarrow.int64(): pd.Int64Dtype(), pyarrow.bool_(): pd.BooleanDtype(),
                 pyarrow.large_string(): pd.StringDtype("pyarrow")}


def contract_frame(table: pyarrow.Table) -> pd.DataFrame:
    """``table`` (typed as ARROW_TYPES, plus any other columns) as the contract's pandas
    frame; times (``occurred_at``, ``ingested_at``) still integer microseconds."""
    return table.to_pandas(types_mapper=_PANDAS_TYPES.get)


def from_epoch_us(values: pd.Series) -> pd.Series:
    """Microseconds since the epoch -> the contract's ``datetime64[ns, UTC]``."""
    return pd.to_datetime(values, unit="us", utc=True).astype("datetime64[ns, UTC]")


def columns_frame(columns: dict[str, list], extra: dict[str, object]) -> pd.DataFrame:
    """The DataFrame the contract validates, from typed column lists (None = missing;
    ``occurred_at`` as datetimes)."""
    occurred = pd.to_datetime(pd.Series(columns["occurred_at"], dtype=object), utc=True)
    df = contract_frame(pyarrow.table({
        name: pyarrow.array(columns[name], type=ARROW_TYPES[name])
        for name in CONTRACT_COLUMNS if name != "occurred_at"}))
    df.insert(CONTRACT_COLUMNS.index("occurred_at"), "occurred_at",
              occurred.astype("datetime64[ns, UTC]"))
    for name, values in extra.items():
        df[name] = values
    return df


def validate(df: pd.DataFrame, type_errors: Failures | None = None
             ) -> tuple[pd.DataFrame, Failures]:
    """Split a batch: (valid rows, {row position: every failure of that row})."""
    reasons: Failures = defaultdict(list)
    for i, errors in (type_errors or {}).items():
        reasons[i].extend(errors)
    if len(df):
        try:
            EventContract.validate(df, lazy=True)
        except pa.errors.SchemaErrors as exc:
            for case in exc.failure_cases.itertuples():
                if pd.isna(case.index):
                    # A whole-column failure (dtype): every row fails it.
                    for i in range(len(df)):
                        reasons[i].append(Failure(check=case.check, column=str(case.column)))
                    continue
                reasons[int(case.index)].append(_failure(case))
    for i, found in reasons.items():
        # A value of the wrong type was set to None, so pandera also calls it missing: keep the
        # type failure, which says what was there.
        typed = {f.column for f in found if f.check == TYPE_CHECK}
        kept: list[Failure] = []
        for failure in found:  # stable and without repeats (values may be unhashable)
            if failure not in kept and not (failure.check == MISSING_CHECK
                                            and failure.column in typed):
                kept.append(failure)
        reasons[i] = kept
    bad = sorted(reasons)
    valid = df.drop(index=df.index[bad]) if bad else df
    return valid, dict(reasons)


def _failure(case) -> Failure:
    """One row's failure from a pandera failure case."""
    if case.check in ROW_CHECKS:  # reported once per column: keep the rule once, for the row
        return Failure(check=case.check)
    if case.check == MISSING_CHECK:
        return Failure(check=MISSING_CHECK, column=str(case.column))
    value = case.failure_case
    if hasattr(value, "item"):  # a numpy scalar: show -500, not np.int64(-500)
        value = value.item()
    return Failure(check=case.check, column=str(case.column), value=value)
