"""Where the services are: the embedded stack's addresses or the ones set in the environment."""

from __future__ import annotations

from streamflow.errors import DatabaseUnavailable
from streamflow.infra import postgres_server
from streamflow.infra.processes import read_state
from streamflow.settings import Settings


def database_url(settings: Settings) -> str:
    """DATABASE_URL when set, else the URL the embedded server recorded when it started."""
    if settings.database_url is not None:
        return settings.database_url.get_secret_value()
    state = read_state(settings.run_dir, postgres_server.COMPONENT)
    if state is None:
        raise DatabaseUnavailable(
            f"the embedded PostgreSQL under {settings.home_dir} is not running: run "
            "`streamflow up`, or set DATABASE_URL"
        )
    return state.address

