"""Function schemas are data, from users and (through the server) from any client: checking them,
and checking arguments against them, never fetches a URL or a file and takes bounded time."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading

import pytest

from fcmistral.errors import UserError
from fcmistral.format.schemas import MAX_SCHEMA_BYTES, normalize_schema, validate_arguments
from tests.conftest import REPO


@pytest.fixture
def listener():
    """A local HTTP server that records every request it gets."""
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server name
            hits.append(self.path)
            body = b'{"type": "string", "description": "SECRET-FROM-THE-NETWORK"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", hits
    server.shutdown()


DEEP: dict = {"type": "string"}
for _ in range(40):
    DEEP = {"type": "array", "items": DEEP}


def function(parameters) -> dict:
    return {"name": "f", "parameters": parameters}


def test_references_outside_the_schema_are_refused_and_never_fetched(listener, tmp_path):
    url, hits = listener
    secret = tmp_path / "secret.json"
    secret.write_text('{"type": "string"}')
    for ref in (f"{url}/latest/meta-data/iam", secret.as_uri(), "other.json#/x"):
        with pytest.raises(UserError, match="never fetched"):
            normalize_schema(function({"type": "object", "properties": {"a": {"$ref": ref}}}))
    # A schema that skipped that check (read some other way) is still never resolved over the network.
    problems = validate_arguments(function({"type": "object", "properties": {"a": {"$ref": f"{url}/x"}}}),
                                  {"a": "x"})
    assert problems and "SECRET" not in " ".join(problems)
    assert hits == []


def test_local_references_still_work():
    schema = function({"type": "object", "$defs": {"unit": {"enum": ["c", "f"]}},
                       "properties": {"unit": {"$ref": "#/$defs/unit"}}})
    assert normalize_schema(schema) is schema
    assert validate_arguments(schema, {"unit": "c"}) == []
    assert validate_arguments(schema, {"unit": "kelvin"})


@pytest.mark.parametrize("parameters, why", [
    ({"$ref": "#"}, "refers to itself"),
    ({"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}, "refers to itself"),
    # Each level refers twice to the one below: 2^24 nodes once followed, from a schema of 1 KB.
    ({"$defs": {f"d{i}": {"allOf": [{"$ref": f"#/$defs/d{i + 1}"}, {"$ref": f"#/$defs/d{i + 1}"}]} for i in range(24)}
      | {"d24": {"type": "string"}}, "$ref": "#/$defs/d0"}, "once its references are followed"),
    ({"type": "object", "patternProperties": {"^(a+)+$": {}}}, "patternProperties"),
    ({"type": "string", "pattern": "(a)\\1"}, "RE2 cannot run"),
    ({"type": "string", "description": "x" * MAX_SCHEMA_BYTES}, "bytes; at most"),
    (DEEP, "deeper than"),
])
def test_schemas_that_would_take_unbounded_time_are_refused(parameters, why):
    with pytest.raises(UserError, match=why):
        normalize_schema(function(parameters))


def test_a_pattern_is_matched_in_linear_time():
    """^(a+)+$ against 'aaa...ab' takes Python's re about 2^n steps (minutes for n = 32); RE2 takes
    microseconds. Run apart, so that a regression fails here instead of hanging the suite."""
    code = ("from fcmistral.format.schemas import normalize_schema, validate_arguments as v\n"
            "s = normalize_schema({'name': 'f', 'parameters': {'type': 'string', 'pattern': '^(a+)+$'}})\n"
            "print(v(s, 'a' * 32 + 'b') != [], v(s, 'aaaa') == [])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.stdout.split() == ["True", "True"], out.stderr[-500:]
