"""Fuzz the OpenAI API from its own OpenAPI schema (schemathesis): no input may give a 5xx, an undocumented status,
or a body that breaks the documented schema. Bounded examples against the app with a fake engine, so it stays
fast; `test_api_fuzz_real.py` runs a smaller bound against the real server. Counts are printed at the end."""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, response_schema_conformance,
                                               status_code_conformance)

from tests.arena.fakes import make_app, make_config
from tests.server.test_api_fields import VocabFakeEngine

# The routes this suite owns; the arena and admin routes have their own tests.
FUZZED = r"^/(v1/(chat/completions|completions|models)|tokenize|detokenize)$"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
SEEN: Counter = Counter()  # (path, status) -> count, printed by the last test


def _app():
    workdir = Path(tempfile.mkdtemp(prefix="palate-fuzz-"))
    return make_app(make_config(workdir), VocabFakeEngine())


schema = schemathesis.openapi.from_asgi("/openapi.json", _app()).include(path_regex=FUZZED)


def aim_at_a_served_model(case) -> None:  # noqa: ANN001 - a schemathesis Case
    """Half the generated bodies name a model that is served, so the fuzzing gets past the 404 into the fields."""
    if isinstance(case.body, dict) and isinstance(case.body.get("model"), str) and len(repr(case.body)) % 2:
        case.body = {**case.body, "model": "base"}


@schema.parametrize()
@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_no_input_breaks_the_api(case):
    aim_at_a_served_model(case)
    response = case.call(headers={"content-type": "application/json"})
    SEEN[(case.path, response.status_code)] += 1
    case.validate_response(response, checks=CHECKS)


def test_fuzz_counts(capsys):
    """Print what the fuzzing sent and got back; it must have reached every fuzzed route, with no 5xx."""
    with capsys.disabled():
        print("\nschemathesis (fake engine): responses by route and status")
        for (path, status), count in sorted(SEEN.items()):
            print(f"  {path:24} {status}  {count}")
        print(f"  total {sum(SEEN.values())}, server errors {sum(c for (_, s), c in SEEN.items() if s >= 500)}")
    if not SEEN:
        pytest.skip("run with the fuzz tests above (e.g. the whole file)")
    assert {path for path, _ in SEEN} == {"/v1/chat/completions", "/v1/completions", "/v1/models", "/tokenize",
                                          "/detokenize"}
    assert not [key for key in SEEN if key[1] >= 500]
