"""Isolation for every suite: no settings leak in from the developer's shell or config file.

`mlxjan` reads `MLXJAN_*` variables and `~/.config/mlxjan/config.toml` (see
`mlxjan.settings`); a developer's `api_key` there would turn every test's server into a keyed
one. For the whole run the test process has no `MLXJAN_*` variables from the shell and
its config file is `NO_CONFIG`, which cannot exist. Processes the tests start get the same
through `without_user_settings` (the e2e suite adds its own data dir, see tests/e2e/conftest).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import pytest

SETTINGS_PREFIX = "MLXJAN_"
# A path under /dev/null: nothing can ever create it, so no config file is ever read.
NO_CONFIG = Path(os.devnull) / "mlxjan" / "config.toml"


def without_user_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` without any `MLXJAN_*` variable, and with the config file at `NO_CONFIG`."""
    env = {name: value for name, value in environ.items()
           if not name.upper().startswith(SETTINGS_PREFIX)}
    env["MLXJAN_CONFIG"] = str(NO_CONFIG)
    return env


def pytest_configure(config: pytest.Config) -> None:
    """From before collection (test modules build apps at import) to the end of the session.

    Tests that set `MLXJAN_*` themselves (monkeypatch) get this state back afterwards.
    """
    patch = pytest.MonkeyPatch()
    for name in list(os.environ):
        if name.upper().startswith(SETTINGS_PREFIX):
            patch.delenv(name)
    patch.setenv("MLXJAN_CONFIG", str(NO_CONFIG))
    config.add_cleanup(patch.undo)
