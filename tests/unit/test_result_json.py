"""Results are plain dataclasses whose ``to_api()`` is the HTTP API's body (issue 12: no
pydantic on the SIP probe path). The API's OpenAPI models are made from the same dataclasses,
so the JSON a result gives must validate against them and keep the keys pydantic would give."""

from __future__ import annotations

import dataclasses
import enum
import json
import math

import pytest
from pydantic.alias_generators import to_camel

from skinnysip.models import api_model
from skinnysip.probes import sip as probes
from skinnysip.result import TLSInfo, WireMessage, camel, to_json

RESULTS = (probes.OptionsResult, probes.RegisterResult, probes.InviteResult, probes.DigestAuthResult)


def _full(cls: type[probes.SIPProbeResult]) -> probes.SIPProbeResult:
    """An instance of ``cls`` with every field set to something other than its default."""
    result = cls(server="127.0.0.1:5060", transport="udp")
    samples: dict[type, object] = {bool: True, int: 7, float: 1.5, str: "x"}
    for f in dataclasses.fields(cls):
        value = getattr(result, f.name)
        if isinstance(value, list) or f.name in ("server", "transport"):
            continue
        kind = str(f.type)
        for t, sample in samples.items():
            if kind.startswith(t.__name__):
                setattr(result, f.name, sample)
    result.headers = [probes.HeaderField(name="Allow", value="INVITE, BYE")]
    result.tls = TLSInfo(version="TLSv1.3", subject_alt_names=["DNS:sip.example.com"], not_after="2030-01-01")
    result.exchange = [WireMessage(direction="sent", time=1.25, local="127.0.0.1:1", remote="127.0.0.1:2",
                                   transport="udp", summary="OPTIONS sip:x", raw="OPTIONS sip:x SIP/2.0\r\n\r\n")]
    return result


def _names(cls: type) -> set[str]:
    names = {f.name for f in dataclasses.fields(cls)}
    for f in dataclasses.fields(cls):
        for nested in (probes.HeaderField, TLSInfo, WireMessage):
            if nested.__name__ in str(f.type):
                names |= _names(nested)
    return names


@pytest.mark.parametrize("cls", RESULTS)
def test_keys_are_pydantics_camel_case(cls: type) -> None:
    for name in _names(cls):
        assert camel(name) == to_camel(name), name


def test_sccp_results_are_dataclasses_with_the_same_keys() -> None:
    """The SCCP results (``probes/sccp.py``) are the same kind of result: their JSON keys are
    what pydantic gave them, nested reports included."""
    from skinnysip.probes import sccp

    result = sccp.SCCPResult(operation="linestate", host="127.0.0.1", port=2000)
    result.lines = [sccp.SCCPLine(line_number=1, dir_number="1001", display_name="Alice")]
    result.call = sccp.SCCPCallReport(dialed="600", rtp_jitter_ms=1.5, states=["RingOut"])
    body = result.to_api()
    for cls in (sccp.SCCPResult, sccp.SCCPLine, sccp.SCCPSpeedDial, sccp.SCCPSoftKey, sccp.SCCPCallReport):
        for f in dataclasses.fields(cls):
            assert camel(f.name) == to_camel(f.name), f.name
    assert body["lines"] == [{"lineNumber": 1, "dirNumber": "1001", "label": "", "displayName": "Alice"}]
    assert body["call"]["rtpJitterMs"] == 1.5 and body["call"]["states"] == ["RingOut"]
    assert body["keepAliveAck"] is None and body["droppedMessages"] == 0 and body["exchange"] == []


@pytest.mark.parametrize("cls", RESULTS)
def test_to_api_is_what_the_openapi_model_describes(cls: type[probes.SIPProbeResult]) -> None:
    body = _full(cls).to_api()
    json.dumps(body)  # JSON types only
    model = api_model(cls)
    assert model.model_validate(body).model_dump(mode="json", by_alias=True) == body
    assert set(body) == {camel(f.name) for f in dataclasses.fields(cls)}
    assert body["tls"]["subjectAltNames"] == ["DNS:sip.example.com"] and body["tls"]["notAfter"] == "2030-01-01"
    assert body["headers"] == [{"name": "Allow", "value": "INVITE, BYE"}]
    assert body["exchange"][0]["direction"] == "sent" and body["exchange"][0]["decoded"] is None


def test_a_default_result_has_fresh_lists_and_the_documented_descriptions() -> None:
    a, b = probes.OptionsResult(server="h:1", transport="udp"), probes.OptionsResult(server="h:1", transport="udp")
    a.exchange.append(_full(probes.OptionsResult).exchange[0])
    assert b.exchange == []
    schema = api_model(probes.OptionsResult).model_json_schema(by_alias=True)
    assert "monotonic clock" in schema["properties"]["rtt"]["description"]
    assert schema["properties"]["exchange"]["default"] == []
    assert schema["required"] == ["server", "transport"]


def test_to_json_converts_what_pydantic_json_mode_converts() -> None:
    class Color(enum.Enum):
        RED = "red"

    assert to_json({"a": (1, 2.5, None), "b": Color.RED, "c": b"\xc3\xa9", "d": {3}}) == {
        "a": [1, 2.5, None], "b": "red", "c": "é", "d": [3]}
    assert to_json(math.nan) is None and to_json(math.inf) is None
    with pytest.raises(TypeError, match="not a JSON result type"):
        to_json(object())


def test_api_model_refuses_what_is_not_a_dataclass() -> None:
    with pytest.raises(TypeError, match="not a dataclass"):
        api_model(int)  # type: ignore[arg-type]


def test_an_api_body_holding_messages_ignores_their_unknown_fields() -> None:
    """``POST /api/pcap`` takes a result's ``exchange``: its items are ``WireMessage``
    dataclasses, whose schema allows other properties, so a body with one is valid (the body's
    own unknown fields stay refused). schemathesis found this as ST202 (schema-valid request
    rejected) once results became dataclasses."""
    from pydantic import ValidationError

    from skinnysip.api.pcap_routes import PcapBody

    item = {"direction": "sent", "time": 1.0, "local": "127.0.0.1:1", "remote": "127.0.0.1:2", "transport": "udp",
            "summary": "OPTIONS", "raw": "OPTIONS sip:x SIP/2.0", "x-other": {"a": 1}}
    body = PcapBody.model_validate({"exchange": [item]})
    assert body.exchange == [WireMessage(**{k: v for k, v in item.items() if k != "x-other"})]  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="unknown"):
        PcapBody.model_validate({"exchange": [item], "unknown": 1})
    with pytest.raises(ValidationError, match="direction"):
        PcapBody.model_validate({"exchange": [{**item, "direction": "sideways"}]})
