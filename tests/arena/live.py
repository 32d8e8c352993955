"""A real `palate serve` for arena end-to-end tests: the shared `live_server` fixture when tests/conftest.py
provides it, else one started here with tests/helpers.py (real vLLM engine, real base model, tiny real adapters).

tests/arena and tests/ui both register `arena_live_server`; the module-level cache makes them share one server.
"""

from __future__ import annotations

import pytest

_started: dict = {}


@pytest.fixture(scope="session")
def arena_live_server(request, tmp_path_factory):
    try:
        yield request.getfixturevalue("live_server")
        return
    except pytest.FixtureLookupError:
        pass
    from tests import helpers

    if "server" not in _started:
        if not (helpers.BASE_MODEL_DIR / "config.json").is_file():
            pytest.skip(f"the base model is not provisioned at {helpers.BASE_MODEL_DIR} (run `palate model pull`)")
        workdir = tmp_path_factory.mktemp("arena-live")
        registry_root = workdir / "adapters"
        helpers.train_tiny_adapters(registry_root)
        _started["server"] = helpers.start_server(workdir, registry_root, timeout_s=400)
    yield _started["server"]
    _started["server"].stop()
