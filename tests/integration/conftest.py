"""Fixtures of the integration tests (the session's services are in tests/conftest.py)."""

from __future__ import annotations

import pytest

from resources import KafkaResource, PostgresResource
from streamflow.db.engine import make_engine
from tests.conftest import create_topic
from tests.helpers.live import start_live
from tests.integration.lanes import SinkProcess


@pytest.fixture
def lane(platform, unique_name, tmp_path):
    """A fresh topic + DLQ topic + group; yields a started sink, stops it afterwards."""
    topic = create_topic(platform, unique_name)
    dlq = create_topic(platform, unique_name + "-dlq", partitions=1)
    sink = SinkProcess(platform, topic, dlq, "g-" + unique_name, tmp_path / "sink.log")
    yield sink
    if sink.proc is not None:
        sink.stop()


@pytest.fixture(scope="module")
def engine(platform):
    eng = make_engine(platform.database_url)
    yield eng
    eng.dispose()


@pytest.fixture(scope="module")
def resources(platform):
    return {"postgres": PostgresResource(database_url=platform.database_url),
            "kafka": KafkaResource(bootstrap_servers=platform.bootstrap)}


@pytest.fixture
def live(platform, tmp_path):
    """A `streamflow live` process on the session's broker, healthy and assigned: its port."""
    proc, port = start_live(platform, tmp_path)
    yield port
    proc.terminate()
    proc.wait(30)
