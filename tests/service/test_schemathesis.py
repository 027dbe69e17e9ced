"""The API fuzzed from its own OpenAPI document (issue 12): every operation, a fixed seed, bounded examples, every
schemathesis check. Probes run the canned runner; with a key configured, auth is checked too (ignored_auth)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from schemathesis import Case
from schemathesis.config import SchemathesisConfig

from service.app import create_app
from service.settings import Settings
from tests.service import probe_runners

KEY = "s" * 32
SEED = 12
MAX_EXAMPLES = 15  # per operation in the fuzzing phase (the coverage phase makes its own cases)
PLAN_EXAMPLES = 3
CONFIG = SchemathesisConfig.from_dict(
    {
        "seed": SEED,
        "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True},
        "phases": {"stateful": {"enabled": False}},
        "checks": {
            # JSON Schema cannot say everything the planner checks (a catalog id that exists, heads that divide
            # by TP, LoRA targets that the model has): schema-valid bodies it rejects are 422s that name the field.
            "positive_data_acceptance": {"expected-statuses": ["2xx", "401", "403", "404", "422", "429"]},
        },
        "headers": {"Authorization": f"Bearer {KEY}"},
        # a plan or a make-it-fit search is a real search (about 0.5-3 s on 2 cores): a few fuzzed cases each, no
        # coverage phase; tests/service/test_plans.py covers their inputs and answers
        "operations": [
            {
                "include-tag": "plans",
                "generation": {"max-examples": PLAN_EXAMPLES},
                "phases": {"coverage": {"enabled": False}},
            }
        ],
    }
)


# The app exists at import (schemathesis reads its OpenAPI document to make the tests); nothing connects until the
# module's fixture starts it. (schemathesis.pytest.from_fixture needs pytest's private Function._nodeid, which
# pytest 9 no longer has.)
DATABASE_DIR = Path(tempfile.mkdtemp(prefix="memplan-schemathesis-"))
APP = create_app(
    Settings(
        database_url=f"sqlite:///{DATABASE_DIR / 'jobs.db'}",
        api_key=KEY,
        allowed_hosts=("localhost", "127.0.0.1", "testserver"),
        probe_runner=f"{probe_runners.MODULE}:canned",
        probe_queue_limit=2,
    )
)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP, config=CONFIG)


@pytest.fixture(scope="module", autouse=True)
def started() -> Iterator[None]:
    """The app's lifespan (migrations, the probe executor) around the whole module."""
    with TestClient(APP):
        yield
    shutil.rmtree(DATABASE_DIR, ignore_errors=True)


@schema.parametrize()
def test_every_operation_passes_every_check(case: Case) -> None:
    case.call_and_validate()


def test_the_run_is_bounded() -> None:
    assert (CONFIG.seed, CONFIG.projects.default.generation.max_examples) == (SEED, MAX_EXAMPLES)
