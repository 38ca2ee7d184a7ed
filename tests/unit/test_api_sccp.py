"""The SCCP HTTP API through its real interface: uvicorn on a free port, the lab CM as a separate
process, httpx as the client. Bad inputs give 400 naming the field; peer failures give 200 with
``success: false``; nothing gives 500."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sccp_lab import api_process, lab_cm_process

from peertools import free_port
from skinnysip.api.app import create_app


@pytest.fixture(scope="module")
def lab_port() -> Iterator[int]:
    with lab_cm_process() as port:
        yield port


@pytest.fixture(scope="module")
def api() -> Iterator[str]:
    with api_process() as url:
        yield url


def post(api: str, path: str, body: Any) -> httpx.Response:
    response = httpx.post(f"{api}/api/sccp/{path}", json=body, timeout=30)
    if response.status_code == 200:
        assert_documented(response.json())
    return response


def assert_documented(body: dict[str, Any]) -> None:
    """A 200 body is what the OpenAPI document says (the SCCPResult model): it validates,
    and it has no key the document leaves out, nested ones included."""
    from skinnysip.api.sccp_routes import RESPONSE_MODEL

    model = RESPONSE_MODEL.model_validate(body)
    assert model.model_dump(mode="json", by_alias=True) == body


def test_probe_register_linestate_over_http(api: str, lab_port: int) -> None:
    base = {"host": "127.0.0.1", "port": lab_port, "timeout": 3000}
    probe = post(api, "probe", base)
    assert probe.status_code == 200
    body = probe.json()
    assert body["success"] is True and body["keepAliveAck"] is True
    assert body["connectMs"] >= 0 and body["latencyMs"] >= 0
    assert [m["summary"] for m in body["exchange"]] == ["KeepAlive", "KeepAliveAck"]

    # `server` (the seed's name) instead of `host`; both at once is a 400
    both = post(api, "register", {**base, "server": "127.0.0.1"})
    assert both.status_code == 400 and "not both" in both.json()["error"]
    reg = post(api, "register", {**{k: v for k, v in base.items() if k != "host"}, "server": "127.0.0.1"}).json()
    for key in ("success", "registered", "error", "messages", "status", "deviceTypeName", "rejected", "rejectReason",
                "keepAliveInterval", "protocolVersion", "connectMs", "latencyMs", "tls", "exchange"):
        assert key in reg
    assert reg["success"] is True and reg["registered"] is True and reg["deviceTypeName"] == "7960"
    assert reg["keepAliveInterval"] == 30 and reg["protocolVersion"] == 11 and reg["tls"] is None
    first = reg["exchange"][0]
    assert first["direction"] == "sent" and first["decoded"]["name"] == "Register" and first["decoded"]["id"] == 1
    assert isinstance(first["time"], float) and first["raw"].startswith("48000000")  # length 0x48 = 4 + 68 (7960 form)

    lines = post(api, "linestate", base).json()
    assert lines["success"] is True
    assert lines["lines"][0] == {"lineNumber": 1, "dirNumber": "1001", "label": "Alice", "displayName": "Alice Example"}
    assert lines["speedDials"] and lines["softKeys"] and lines["capabilitiesRequested"] is True


def test_call_setup_over_http(api: str, lab_port: int) -> None:
    body = post(api, "call-setup", {"host": "127.0.0.1", "port": lab_port, "dialNumber": "600", "holdMs": 1000,
                                    "timeout": 3000}).json()
    assert body["success"] is True, body["error"]
    assert body["rtpPacketsSent"] >= 20 and body["rtpPacketsReceived"] >= 20
    assert "Connected" in body["call"]["states"]


def test_peer_failures_are_200_with_error(api: str, lab_port: int) -> None:
    rejected = post(api, "register", {"host": "127.0.0.1", "port": lab_port, "deviceName": "SEP0000DEADBEEF"})
    assert rejected.status_code == 200
    body = rejected.json()
    assert body["success"] is False and body["rejected"] is True
    assert body["rejectReason"] == "No Authority: SEP0000DEADBEEF"
    dead = post(api, "probe", {"host": "127.0.0.1", "port": free_port(), "timeout": 500})
    assert dead.status_code == 200 and dead.json()["success"] is False
    assert "connection refused" in dead.json()["error"]


@pytest.mark.parametrize(
    "path, body, field",
    [
        ("probe", {}, "host"),
        ("probe", {"host": ""}, "host"),
        ("probe", {"host": "bad host name"}, "host"),
        ("probe", {"host": "127.0.0.1", "port": 70000}, "port"),
        ("probe", {"host": "127.0.0.1", "port": "2000"}, "port"),
        ("register", {"host": "127.0.0.1", "deviceName": "PHONE1"}, "deviceName"),
        ("register", {"host": "127.0.0.1", "deviceType": -1}, "deviceType"),
        ("register", {"host": "127.0.0.1", "timeout": 0}, "timeout"),
        ("register", {"host": "127.0.0.1", "timeout": 10_000_000}, "timeout"),
        ("register", {"host": "127.0.0.1", "protocolVersion": 99}, "protocolVersion"),
        ("call-setup", {"host": "127.0.0.1", "dialNumber": "60x"}, "dialNumber"),
        ("call-setup", {"host": "127.0.0.1", "dialNumber": "600", "holdMs": 10_000_000}, "holdMs"),
        ("call-setup", {"host": "127.0.0.1"}, "dialNumber"),
        ("linestate", {"host": "127.0.0.1", "lineNumber": 0}, "lineNumber"),
        ("linestate", {"host": "127.0.0.1", "tls": "yes"}, "tls"),
    ],
)
def test_bad_input_is_400_naming_the_field(api: str, path: str, body: dict[str, Any], field: str) -> None:
    r = post(api, path, body)
    assert r.status_code == 400
    data = r.json()
    assert data["success"] is False and data["error"].startswith(field)


def test_non_json_bodies_are_400(api: str) -> None:
    for content in (b"not json", b"[1, 2]", b"", b"\xff\xfe"):
        r = httpx.post(f"{api}/api/sccp/register", content=content, headers={"content-type": "application/json"},
                       timeout=10)
        assert r.status_code == 400 and r.json()["success"] is False


def test_openapi_lists_the_routes() -> None:
    client = TestClient(create_app())
    document = client.get("/openapi.json").json()
    paths = document["paths"]
    for p in ("probe", "register", "linestate", "call-setup"):
        ok = paths[f"/api/sccp/{p}"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert ok == {"$ref": "#/components/schemas/SCCPResult"}
    result = document["components"]["schemas"]["SCCPResult"]
    assert {"success", "error", "registered", "keepAliveAck", "lines", "call", "exchange"} <= set(result["properties"])
