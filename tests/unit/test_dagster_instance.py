"""The Dagster instance `streamflow up` and compose's `migrate` write: a fresh UI opens on
its pages, not on Dagster's newsletter sign-up form (the "nux")."""

import dagster as dg

from streamflow.settings import load_settings
from streamflow.supervisor import write_dagster_yaml


def test_the_newsletter_form_is_off(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no .env from the checkout
    home = write_dagster_yaml(load_settings(STREAMFLOW_HOME=str(tmp_path),
                                            DAGSTER_HOME=str(tmp_path / "dh"))).parent
    with dg.DagsterInstance.from_config(str(home)) as instance:
        # What the webserver's `shouldShowNux` query reads (besides the browser's own flag).
        assert instance.nux_enabled is False
