"""The whole HTTP API fuzzed from its OpenAPI schema with schemathesis: valid and invalid bodies for
every route, over real HTTP (uvicorn, the app, the batching engine with the scripted model). No
request may get a server error or hang, and /health stays green. Bounded and derandomized here;
benchmarks/server_hostile.py runs it longer, beside a soak and a chaos run."""

from __future__ import annotations

import pytest

pytest.importorskip("schemathesis")
from benchmarks.server_hostile import fuzz  # noqa: E402

EXAMPLES = 40  # per route and mode


def test_the_api_fuzzed_from_its_schema_never_errs_or_hangs(serve):
    _, _, base = serve()
    assert fuzz(base, EXAMPLES) >= EXAMPLES * 4  # chat and completions, valid and invalid bodies (and the GETs)
