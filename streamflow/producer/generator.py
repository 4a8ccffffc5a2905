"""Synthetic user events with realistic mixes, and replay of recorded events from a file.

E-mails exist only inside this module's process: each is turned into its keyed hash and masked
form as soon as it is made or read, and only those ever reach an event.
"""

from __future__ import annotations

import itertools
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from streamflow import contract, pii
from streamflow.contract import EventType

# Share of each event type in the synthetic stream (sums to 1).
EVENT_MIX: dict[EventType, float] = {
    EventType.LOGIN: 0.35,
    EventType.PAGE_VIEW: 0.30,
    EventType.LOGOUT: 0.10,
    EventType.PURCHASE: 0.10,
    EventType.SIGNUP: 0.08,
    EventType.PASSWORD_RESET: 0.07,
}
LOGIN_FAILURE_RATE = 0.12
# Zipf exponent of user popularity: a few users make most events, as in real traffic.
POPULARITY_EXPONENT = 1.1
# Late events are 11-60 s old: past the 10 s window they belong to, within a grace period.
LATE_MIN_S, LATE_MAX_S = 11, 60
DOMAINS = ("example.com", "mail.example.org", "corp.example.net", "example.co.uk")
FIRST = ("ana", "ben", "chen", "dara", "eli", "fatima", "gus", "hana", "ivan", "jo", "kim",
         "lena", "mo", "nia", "omar", "pia", "quinn", "raj", "sara", "tom", "uma", "vic")
LAST = ("smith", "garcia", "kim", "muller", "rossi", "silva", "tanaka", "nowak", "dubois")

# Invalid events for the DLQ demo: some cannot land at all, some land but break the contract.
_INVALID_KINDS = ("not_json", "no_event_id", "bad_event_id", "unknown_type", "negative_amount",
                  "bad_email_hash", "no_user", "future_version")

Message = tuple[bytes, bytes]  # (key, value)


@dataclass(frozen=True, slots=True)
class User:
    user_id: str
    email_hash: str
    email_masked: str
    country: str
    device: str


def make_users(key: bytes, count: int, rng: random.Random) -> list[User]:
    users = []
    for i in range(count):
        email = f"{rng.choice(FIRST)}.{rng.choice(LAST)}{i}@{rng.choice(DOMAINS)}"
        users.append(User(f"user-{i:06d}", pii.email_hash(key, email), pii.mask_email(email),
                          rng.choice(contract.COUNTRIES), rng.choice(contract.DEVICES)))
    return users  # the clear e-mails go out of scope here


def _cumulative(weights: list[float]) -> list[float]:
    return list(itertools.accumulate(weights))


class EventGenerator:
    def __init__(self, key: bytes, *, users: int = 10_000, seed: int | None = None,
                 late_rate: float = 0.0, invalid_rate: float = 0.0) -> None:
        self.rng = random.Random(seed)
        self.users = make_users(key, users, self.rng)
        self.user_weights = _cumulative([1 / (rank ** POPULARITY_EXPONENT)
                                         for rank in range(1, users + 1)])
        self.types = list(EVENT_MIX)
        self.type_weights = _cumulative(list(EVENT_MIX.values()))
        self.late_rate = late_rate
        self.invalid_rate = invalid_rate
        self._time_cache: tuple[int, str] = (-1, "")

    def _event_id(self, epoch_ms: int) -> str:
        # UUIDv7 (RFC 9562): 48 bits of Unix milliseconds first, then random bits from the
        # seeded generator (reproducible runs). Time-ordered ids append to the primary-key
        # index instead of splitting random pages (with the sink's GIL switch interval, this
        # took the sink from 46.8k to 64k events/s: benchmarks/results/20261125T2*-backbone).
        h = f"{epoch_ms & 0xFFFFFFFFFFFF:012x}{self.rng.getrandbits(80):020x}"
        return f"{h[:8]}-{h[8:12]}-7{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"

    def _time(self, epoch_ms: int) -> str:
        if self._time_cache[0] != epoch_ms:  # many events share a millisecond at 100k/s
            self._time_cache = (epoch_ms, contract.format_epoch_ms(epoch_ms))
        return self._time_cache[1]

    def event(self, user: User, event_type: EventType, epoch_ms: int) -> dict:
        event = {
            "event_id": self._event_id(epoch_ms),
            "schema_version": contract.SCHEMA_VERSION,
            "event_type": event_type.value,
            "user_id": user.user_id,
            "email_hash": user.email_hash,
            "email_masked": user.email_masked,
            "occurred_at": self._time(epoch_ms),
            "country": user.country,
            "device": user.device,
        }
        if event_type is EventType.LOGIN:
            event["success"] = self.rng.random() >= LOGIN_FAILURE_RATE
        elif event_type is EventType.PURCHASE:
            # Log-normal basket: median ~$25, a long tail of big orders.
            event["amount_cents"] = max(1, int(self.rng.lognormvariate(7.8, 1.0)))
        return event

    def batch(self, n: int, now_ms: int | None = None) -> list[Message]:
        """``n`` encoded messages, keyed by user_id."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        rng = self.rng
        users = rng.choices(self.users, cum_weights=self.user_weights, k=n)
        types = rng.choices(self.types, cum_weights=self.type_weights, k=n)
        out: list[Message] = []
        for user, event_type in zip(users, types, strict=True):
            epoch_ms = now_ms
            if self.late_rate and rng.random() < self.late_rate:
                epoch_ms -= rng.randint(LATE_MIN_S * 1000, LATE_MAX_S * 1000)
            event = self.event(user, event_type, epoch_ms)
            if self.invalid_rate and rng.random() < self.invalid_rate:
                out.append((user.user_id.encode(), self._spoil(event)))
            else:
                out.append((user.user_id.encode(), orjson.dumps(event)))
        return out

    def _spoil(self, event: dict) -> bytes:
        kind = self.rng.choice(_INVALID_KINDS)
        if kind == "not_json":
            return orjson.dumps(event)[:-7]  # truncated in flight
        if kind == "no_event_id":
            del event["event_id"]
        elif kind == "bad_event_id":
            event["event_id"] = "evt-" + event["event_id"][:8]
        elif kind == "unknown_type":
            event["event_type"] = "teleport"
        elif kind == "negative_amount":
            event.update(event_type=EventType.PURCHASE.value, amount_cents=-500)
        elif kind == "bad_email_hash":
            event["email_hash"] = "not-a-hash"
        elif kind == "no_user":
            del event["user_id"]
        elif kind == "future_version":
            event["schema_version"] = 99
        return orjson.dumps(event)


_REPLAY_NAMESPACE = uuid.UUID("6f1c1bde-5f2d-4c62-9a55-8f1d3b7a0e42")


def mask_record(record: dict, key: bytes, line: bytes) -> dict:
    """A recorded event made safe to publish: e-mails hashed/masked, ids and defaults filled.

    Its ``email`` becomes ``email_hash`` and ``email_masked``; an address anywhere else (in
    text, nested objects and arrays, object keys) is masked (``pii.mask_json``). An event
    without a valid ``event_id`` gets one derived from the line's bytes, so replaying the same
    file twice lands each event once.
    """
    event = dict(record)
    email = event.pop("email", None)
    event = pii.mask_json(event, key)
    if isinstance(email, str) and email:
        event["email_hash"] = pii.email_hash(key, email)
        event["email_masked"] = pii.mask_email(email)
    if "occurred_at" not in event and isinstance(event.get("timestamp"), str):
        event["occurred_at"] = event.pop("timestamp")
    event.setdefault("schema_version", contract.SCHEMA_VERSION)
    event_id = event.get("event_id")
    try:
        event["event_id"] = str(uuid.UUID(str(event_id)))
    except ValueError:
        event["event_id"] = str(uuid.uuid5(_REPLAY_NAMESPACE, line.decode("utf-8", "replace")))
    if "user_id" not in event and "email_hash" in event:
        event["user_id"] = "user-" + event["email_hash"][:12]
    return event


def _masked_line(line: bytes) -> bytes:
    """A line that is not JSON, as it is unless it holds an e-mail (then masked)."""
    text = line.decode("utf-8", "replace")
    masked = pii.mask_emails_in(text)
    return line if masked == text else masked.encode()


def replay_file(path: Path, key: bytes) -> Iterator[Message]:
    """Messages from a JSON-lines file; a line that is not a JSON object is sent as it is
    (e-mails masked), so the sink dead-letters it with a reason instead of it vanishing here."""
    with open(path, "rb") as handle:
        for raw in handle:
            line = raw.rstrip(b"\r\n")
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                yield b"", _masked_line(line)
                continue
            if not isinstance(record, dict):  # JSON but no event: the sink dead-letters it
                # Masked decoded: an address written with an escaped @ ("\u0040") is one too.
                masked = pii.mask_json(record, key)
                yield b"", line if masked == record else _encoded(masked, line)
                continue
            event = mask_record(record, key, line)
            yield str(event.get("user_id", "")).encode(), _encoded(event, line)


def _encoded(value: object, line: bytes) -> bytes:
    """``value`` as JSON; past orjson's 255 levels of nesting, the line's own text with
    e-mails masked (the sink dead-letters it, the producer must not die on it)."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return _masked_line(line)
