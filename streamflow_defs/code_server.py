"""The Dagster code server of the local stack: `dagster api grpc` with warm run workers.

Dagster's code server starts each run in a fresh *spawned* Python that imports Dagster and
these definitions again: ~5-7 s of CPU per run on 2 cores, longer than a micro-batch itself,
and the main cost of window latency (`make bench`). Here runs start from a *forkserver* that
imported the definitions once, so a run process begins with everything loaded. Forkserver
children are forks of a single-threaded process (never of the gRPC server's threads).

The webserver and the daemon both use this one server (workspace.yaml, written by
`streamflow up`) instead of each importing the code in a server of its own.

    python -m streamflow_defs.code_server -h 127.0.0.1 -p 4000 \
        -m streamflow_defs.definitions --location-name streamflow_defs.definitions
"""

import multiprocessing
import signal
import sys

from dagster._cli.api import grpc_command
from dagster._grpc import server

# Imported once by the forkserver, inherited by every run process it forks.
PRELOAD = ["streamflow_defs.definitions"]


def warm_run_workers() -> None:
    """Make every DagsterApiServer start runs from a preloaded forkserver."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    init = server.DagsterApiServer.__init__

    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self._mp_ctx = context  # pinned dagster version: the one context runs start from

    server.DagsterApiServer.__init__ = __init__


if __name__ == "__main__":
    # Dagster maps SIGTERM to whatever SIGINT does. Started from a shell's background job,
    # SIGINT is ignored (inherited), and so the server then ignored SIGTERM too: `docker
    # compose stop` and `streamflow down` had to kill it after their grace period.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    warm_run_workers()
    sys.exit(grpc_command.main(args=sys.argv[1:], prog_name="streamflow-code-server"))
