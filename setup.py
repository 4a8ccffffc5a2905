"""Ships the top-level dbt_project/ in the wheel as streamflow/dbt_project, with its manifest.

Everything else is in pyproject.toml. package-data cannot name files outside a package, and the
dbt project stays at the top level of the repository (product brief). The manifest is prepared
before the build (`make wheel` runs `streamflow dbt prepare`): dbt is not installed in the
isolated build environment, so a missing or stale manifest fails the build here.
"""

import importlib.util
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


def _dbt_env():
    """streamflow/dbt_env.py alone (its imports are the standard library's)."""
    spec = importlib.util.spec_from_file_location("_dbt_env", ROOT / "streamflow/dbt_env.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildPyWithDbtProject(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads dbt_project/ where it is
        dbt_env = _dbt_env()
        source = ROOT / "dbt_project"
        if dbt_env.manifest_is_stale(source):
            raise SystemExit(f"{dbt_env.manifest_path(source)} is missing or older than the dbt "
                             "project: run `streamflow dbt prepare` (or `make wheel`) first")
        packaged = Path(self.build_lib) / "streamflow" / "dbt_project"
        shutil.rmtree(packaged, ignore_errors=True)
        shutil.copytree(source, packaged, ignore=dbt_env.not_shipped)


setup(cmdclass={"build_py": BuildPyWithDbtProject})
