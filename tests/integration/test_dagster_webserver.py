"""The Dagster webserver loads the Definitions and serves the lineage over GraphQL, on the
instance `streamflow up` writes: SQLite storage, and PostgreSQL storage in the data database
(STREAMFLOW_DAGSTER_STORAGE=postgres, the compose layout)."""

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from streamflow.infra.processes import free_port
from streamflow.supervisor import write_dagster_yaml
from tests.conftest import isolated_settings, wait_for, worker_env

QUERY = "{ assetNodes { assetKey { path } dependencyKeys { path } } instance { info } }"
RUN_STORAGE = {"sqlite": "SqliteRunStorage", "postgres": "PostgresRunStorage"}


@pytest.fixture(scope="module", params=sorted(RUN_STORAGE))
def webserver(platform, tmp_path_factory, request):
    home = tmp_path_factory.mktemp("dagster-home")
    write_dagster_yaml(isolated_settings(home, DAGSTER_HOME=str(home),
                                         STREAMFLOW_DAGSTER_STORAGE=request.param))
    port = free_port()
    log = open(home / "webserver.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster-webserver"), "-h", "127.0.0.1", "-p",
         str(port), "-m", "streamflow_defs.definitions"],
        env=worker_env(platform, DAGSTER_HOME=str(home)), stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.poll() is None, (home / "webserver.log").read_text()[-3000:]
        try:
            return urllib.request.urlopen(url + "/server_info", timeout=2).status == 200
        except OSError:
            return False

    wait_for(up, timeout_s=180, interval_s=1.0, message="dagster-webserver")
    yield url, request.param
    proc.terminate()
    proc.wait(30)
    log.close()


def graphql(url: str, query: str) -> dict:
    request = urllib.request.Request(url + "/graphql", data=json.dumps({"query": query}).encode(),
                                     headers={"Content-Type": "application/json"})
    for _ in range(30):  # the code location may still be loading
        body = json.loads(urllib.request.urlopen(request, timeout=30).read())
        if body.get("data", {}).get("assetNodes"):
            return body["data"]
        time.sleep(1)
    raise AssertionError(f"no asset nodes: {body}")


def test_lineage_runs_from_topic_to_dbt_marts(webserver):
    url, storage = webserver
    data = graphql(url, QUERY)
    assert RUN_STORAGE[storage] in data["instance"]["info"]
    nodes = data["assetNodes"]
    parents = {"/".join(n["assetKey"]["path"]): {"/".join(d["path"]) for d in n["dependencyKeys"]}
               for n in nodes}
    chain = ["kafka/user_events", "raw/events", "notifications", "event_windows",
             "dbt/stg_event_windows"]
    for parent, child in zip(chain, chain[1:], strict=False):
        assert parent in parents[child], (parent, child, parents[child])
    assert "raw/events" in parents["dbt/stg_events"]
    assert "dbt/stg_notifications" in parents["dbt/fct_events"]
    assert "dbt/fct_events" in parents["dbt/dim_users"]
    assert "event_windows" in parents["kafka/analytics"]
    assert "notifications" in parents["kafka/notifications"]
    assert "notifications" in parents["dlq_report"]
