"""A second, smaller schemathesis run against the real server (vLLM engine, the shared live server): no 5xx, no
undocumented status, no body that breaks the documented schema. Counts are printed at the end."""

from __future__ import annotations

from collections import Counter

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from tests.server.test_api_fuzz import CHECKS, FUZZED, _app, aim_at_a_served_model

pytestmark = [pytest.mark.e2e, pytest.mark.engine]
SEEN: Counter = Counter()


# The real server serves the same app, so the schema comes from the app itself (schemathesis' fixture-loaded
# schemas do not work with this pytest); each case is sent over HTTP to the live server.
schema = schemathesis.openapi.from_dict(_app().openapi()).include(path_regex=FUZZED)


@schema.parametrize()
@settings(max_examples=12, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
def test_no_input_breaks_the_real_server(case, live_server):
    aim_at_a_served_model(case)
    # Keep generation short: the fuzzer's max_tokens would otherwise make some cases run for minutes on a CPU.
    if isinstance(case.body, dict) and case.path in ("/v1/chat/completions", "/v1/completions"):
        case.body = {**case.body, "max_tokens": 2}
        case.body.pop("max_completion_tokens", None)
        case.body.pop("min_tokens", None)
    response = case.call(base_url=live_server.url, headers={"content-type": "application/json"}, timeout=300)
    SEEN[(case.path, response.status_code)] += 1
    case.validate_response(response, checks=CHECKS)


def test_real_fuzz_counts(live_server, capsys):
    with capsys.disabled():
        print("\nschemathesis (real server): responses by route and status")
        for (path, status), count in sorted(SEEN.items()):
            print(f"  {path:24} {status}  {count}")
        print(f"  total {sum(SEEN.values())}, server errors {sum(c for (_, s), c in SEEN.items() if s >= 500)}")
    if not SEEN:
        pytest.skip("run with the fuzz test above (e.g. the whole file)")
    assert not [key for key in SEEN if key[1] >= 500]
    assert httpx.get(f"{live_server.url}/health", timeout=10).status_code == 200
