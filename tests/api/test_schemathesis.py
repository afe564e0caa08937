"""Property-based API checks: schemathesis against the app's own OpenAPI schema.

Every operation gets a fixed number of generated requests (valid and invalid); no response
may be a 5xx or break the documented schema. Runs on the fake engine, in process.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from mlxjan.engine.base import Engine
from mlxjan.server.app import create_app
from mlxjan.settings import Settings
from mlxjan.testing.fake_engine import FakeEngine

EXAMPLES_PER_OPERATION = 40


def _data_dir() -> Path:
    """A data dir of its own (stored responses and the reasoning key are written there),
    removed when the run ends: the schema is read at collection, before any fixture."""
    path = Path(tempfile.mkdtemp(prefix="mlxjan-schemathesis-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def _app() -> object:
    engines: dict[str, Engine] = {"fake-model": FakeEngine("fake-model", context_length=512)}
    config = Settings(data_dir=_data_dir(), trusted_hosts=["testserver"],
                      default_model="fake-model", request_timeout=10)
    return create_app(config, engines=engines)


schema = schemathesis.openapi.from_asgi("/openapi.json", _app())


@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None,
          suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case: schemathesis.Case) -> None:
    # Not checked: that every schema-valid request is accepted. Some are refused on purpose
    # with a clear 400 that depends on the model, not the schema (a prompt longer than the
    # context, images for a text-only model, n > 1).
    case.call_and_validate(excluded_checks=[positive_data_acceptance])
