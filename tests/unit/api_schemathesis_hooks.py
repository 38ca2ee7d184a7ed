"""schemathesis hooks for tests/unit/test_api_schemathesis.py (loaded via SCHEMATHESIS_HOOKS).

``caFile`` names a file on the server's disk: no generator can know which exist, so a
generated string value is dropped (a value of the wrong type stays: it must still be a 400)."""

from __future__ import annotations

from typing import Any

import schemathesis


@schemathesis.hook
def map_body(context: Any, body: Any) -> Any:
    if isinstance(body, dict) and isinstance(body.get("caFile"), str):
        body = {k: v for k, v in body.items() if k != "caFile"}
    return body
