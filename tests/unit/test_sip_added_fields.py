"""Header fields added to the requests we build (a probe's ``--header``, a load run's) and the
methods ``sip request`` sends: one rule (:func:`skinnysip.sip.request.check_header_field`,
:func:`skinnysip.probes.sip.check_method`), and the HTTP API's JSON Schema saying the same."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from skinnysip.api.sip_routes import _ADDABLE_NAME
from skinnysip.probes.sip import ProbeRequest, request
from skinnysip.sip.message import canonical_name
from skinnysip.sip.request import MANAGED_HEADERS, MAX_REQUEST_BODY, check_header_field, check_method

COMPACT = ["i", "m", "e", "l", "c", "f", "s", "k", "t", "v", "o", "u", "r", "b", "x", "y", "a", "j", "d"]
TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"


def _allowed(name: str) -> bool:
    try:
        check_header_field(name, "x")
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("name", [*sorted(MANAGED_HEADERS), *(n.upper() for n in sorted(MANAGED_HEADERS)),
                                  *(n.lower() for n in sorted(MANAGED_HEADERS)), *COMPACT, *(c.upper() for c in COMPACT),
                                  "X-A", "Event", "Route", "User-Agent", "Expire", "Vias", "", "X A", "X:A"])
def test_the_api_schema_admits_exactly_the_names_the_rule_admits(name: str) -> None:
    assert bool(re.fullmatch(_ADDABLE_NAME, name)) == _allowed(name)
    assert _allowed(name) == (bool(re.fullmatch(f"[{re.escape(TOKEN_CHARS)}]+", name))
                              and canonical_name(name) not in MANAGED_HEADERS)


@given(st.text(alphabet=TOKEN_CHARS, min_size=1, max_size=20))
def test_any_token_is_judged_alike_by_schema_and_rule(name: str) -> None:
    assert bool(re.fullmatch(_ADDABLE_NAME, name)) == _allowed(name)


@pytest.mark.parametrize(("value", "allowed"), [("one line", True), ("", True), ("a" * 1024, True),
                                                ("a" * 1025, False), ("a\r\nVia: x", False), ("a\nb", False),
                                                ("a\0b", False)])
def test_a_value_is_one_line_of_at_most_1024_characters(value: str, allowed: bool) -> None:
    try:
        check_header_field("X-A", value)
    except ValueError as exc:
        assert not allowed and "one line" in str(exc)
    else:
        assert allowed


def test_hints_name_what_to_use_instead() -> None:
    with pytest.raises(ValueError, match=r"^headers: Expires is written by skinnysip itself \(use --expires\)$"):
        check_header_field("expires", "5", {"Expires": "use --expires"})


@pytest.mark.parametrize(("method", "says"), [("INVITE", "invite probe"), ("invite", "invite probe"),
                                              ("ACK", "INVITE transaction"), ("Cancel", "pending request"),
                                              ("REGISTER", "would leave a binding"),
                                              ("NOT IFY", "not a SIP method"), ("", "not a SIP method")])
def test_methods_that_are_not_one_request_are_refused(method: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        check_method(method)


def test_any_other_token_is_a_method_as_written() -> None:
    for method in ("MESSAGE", "NOTIFY", "INFO", "PUBLISH", "SUBSCRIBE", "FETCH", "notify"):
        assert check_method(method) == method


async def test_request_refuses_a_body_too_large_and_a_content_type_that_is_no_media_type() -> None:
    probe = ProbeRequest(host="127.0.0.1", port=9)
    with pytest.raises(ValueError, match="at most 65536"):
        await request(probe, "MESSAGE", b"x" * (MAX_REQUEST_BODY + 1))
    with pytest.raises(ValueError, match="not a media type"):
        await request(probe, "MESSAGE", b"x", "text/plain\r\nVia: x")


async def test_added_fields_the_core_writes_fail_the_probe_before_anything_is_sent() -> None:
    result = await request(ProbeRequest(host="127.0.0.1", port=9, headers=[("CSeq", "1 FOO")]), "FETCH")
    assert not result.success and result.error == "invalid request: headers: CSeq is written by skinnysip itself"
    assert result.exchange == []
