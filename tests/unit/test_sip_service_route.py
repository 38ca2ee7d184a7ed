"""The registrar's service route (RFC 3608 §6.1) at the phone: learnt from each 2xx to
REGISTER, carried as Route by requests outside a dialog (never by REGISTER), after the
outbound proxy's; without an outbound proxy such requests go to its first hop. The
registrar and the service proxy are raw sockets on 127.0.0.1 that send exact bytes;
Kamailio's side is in ``tests/peers/test_sip_service_route.py``."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest

from skinnysip.phone.api import ErrorEvent, PhoneError, RegistrationChanged, event_to_dict
from skinnysip.phone.sip_phone import SIPAccount, SIPPhone

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from rawsip import response, udp_server  # noqa: E402

pytestmark = pytest.mark.timeout(60)


def registrar(service_routes: list[str]) -> Any:
    """200 to each REGISTER with its Contact, and the next of ``service_routes`` (the last one
    stays) as ``Service-Route`` field lines (empty: none); 200 to any other request."""

    def reply(data: bytes, f: dict[str, str]) -> list[bytes]:
        if f["method"] == "ACK":
            return []
        if f["method"] != "REGISTER":
            return [response(f)]
        route = service_routes.pop(0) if len(service_routes) > 1 else service_routes[0]
        return [response(f, extra=f"Contact: {f['Contact']};expires=60\r\n{route}")]

    return reply


def ok(data: bytes, f: dict[str, str]) -> list[bytes]:
    return [] if f["method"] == "ACK" else [response(f)]


def routes(raw: bytes) -> list[str]:
    return re.findall(r"(?im)^Route: *(.*?)\r$", raw.decode("latin-1"))


def method(raw: bytes) -> str:
    return raw.split(b" ", 1)[0].decode()


def events(phone: SIPPhone, kind: type) -> list[Any]:
    out = []
    while not phone._events.empty():
        event = phone._events.get_nowait()
        if isinstance(event, kind):
            out.append(event)
    return out


def account(port: int, **kw: Any) -> SIPAccount:
    return SIPAccount(aor="sip:alice@example.test", registrar=f"127.0.0.1:{port}", expires=60,
                      **{"timeout": 3.0, **kw})


async def test_requests_outside_a_dialog_go_along_the_service_route_but_register_does_not() -> None:
    with udp_server(ok) as (hop, at_hop):
        first = f"<sip:127.0.0.1:{hop};lr>"
        fields = f"Service-Route: {first}\r\nService-Route: <sip:orig@scscf.example.test;lr>\r\n"
        with udp_server(registrar([fields])) as (port, at_registrar):
            async with SIPPhone(account(port)) as phone:
                assert phone.service_route == [first, "<sip:orig@scscf.example.test;lr>"]
                [event] = [e for e in events(phone, RegistrationChanged) if e.state.value == "registered"]
                assert list(event.service_route) == phone.service_route
                assert event_to_dict(event)["serviceRoute"] == phone.service_route
                await phone.message("sip:bob@example.test", "along the service route")
                assert await phone.register()  # a refresh: to the registrar, without the route
    [message] = at_hop
    assert method(message) == "MESSAGE" and routes(message) == [first, "<sip:orig@scscf.example.test;lr>"]
    assert message.startswith(b"MESSAGE sip:bob@example.test SIP/2.0\r\n")
    registers = [r for r in at_registrar if method(r) == "REGISTER"]
    assert len(registers) >= 2 and all(routes(r) == [] for r in registers)
    assert all(method(r) == "REGISTER" for r in at_registrar)


async def test_an_outbound_proxy_comes_first_and_gets_the_request() -> None:
    with udp_server(registrar(["Service-Route: <sip:orig@scscf.example.test;lr>\r\n"])) as (port, received):
        async with SIPPhone(account(port, outbound_proxy=f"127.0.0.1:{port}")) as phone:
            await phone.message("sip:bob@example.test", "through the proxy")
    registers = [r for r in received if method(r) == "REGISTER"]  # and the un-REGISTER at close
    assert registers and all(routes(r) == [f"<sip:127.0.0.1:{port};lr>"] for r in registers)
    [message] = [r for r in received if method(r) == "MESSAGE"]
    assert routes(message) == [f"<sip:127.0.0.1:{port};lr>", "<sip:orig@scscf.example.test;lr>"]


async def test_a_comma_separated_service_route_keeps_its_order_and_a_first_hop_at_the_registrar() -> None:
    """One field with two values (RFC 3261 §7.3.1); the first hop is the registrar itself, so
    the request goes on the registrar's flow."""
    given: list[str] = []

    def reply(data: bytes, f: dict[str, str]) -> list[bytes]:
        return registrar(list(given))(data, f)

    with udp_server(reply) as (port, received):
        given.append(f"Service-Route: <sip:127.0.0.1:{port};lr>, <sip:orig@scscf.example.test;lr>\r\n")
        async with SIPPhone(account(port)) as phone:
            assert phone.service_route == [f"<sip:127.0.0.1:{port};lr>", "<sip:orig@scscf.example.test;lr>"]
            await phone.message("sip:bob@example.test", "to the registrar")
    [message] = [r for r in received if method(r) == "MESSAGE"]
    assert routes(message) == [f"<sip:127.0.0.1:{port};lr>", "<sip:orig@scscf.example.test;lr>"]


@pytest.mark.parametrize("bad", [
    "Service-Route: <sip:127.0.0.1:9;lr\r\n",  # an unterminated <
    "Service-Route: <tel:+15551234567>\r\n",  # not a SIP URI
])
async def test_a_malformed_service_route_is_reported_and_not_followed(bad: str) -> None:
    with udp_server(registrar([bad])) as (port, received):
        async with SIPPhone(account(port)) as phone:
            assert phone.service_route == []
            assert any("Service-Route is malformed" in e.reason for e in events(phone, ErrorEvent))
            await phone.message("sip:bob@example.test", "no route")
    [message] = [r for r in received if method(r) == "MESSAGE"]
    assert routes(message) == []


async def test_each_registration_replaces_the_route_and_unregister_drops_it() -> None:
    with udp_server(ok) as (hop, at_hop):
        given = [f"Service-Route: <sip:127.0.0.1:{hop};lr>\r\n", "", ""]
        with udp_server(registrar(given)) as (port, at_registrar):
            async with SIPPhone(account(port)) as phone:
                assert phone.service_route == [f"<sip:127.0.0.1:{hop};lr>"]
                assert await phone.register()  # its 2xx has no Service-Route: none now
                assert phone.service_route == []
                await phone.message("sip:bob@example.test", "straight to the registrar")
                given[:] = [f"Service-Route: <sip:127.0.0.1:{hop};lr>\r\n"]
                assert await phone.register()
                assert phone.service_route == [f"<sip:127.0.0.1:{hop};lr>"]
                assert await phone.unregister()
                assert phone.service_route == []
    assert [method(r) for r in at_hop] == []
    assert [routes(r) for r in at_registrar if method(r) == "MESSAGE"] == [[]]


async def test_an_unreachable_first_hop_is_a_phone_error() -> None:
    """A service route whose first hop nobody answers: the request fails with the reason,
    the phone stays registered."""
    with udp_server(ok) as (hop, _):
        pass  # closed again: nothing listens on ``hop`` now
    given = [f"Service-Route: <sip:127.0.0.1:{hop};lr>\r\n"]
    with udp_server(registrar(given)) as (port, _):
        async with SIPPhone(account(port, timeout=1.0)) as phone:
            with pytest.raises(PhoneError):
                await phone.message("sip:bob@example.test", "nobody there")
            assert phone.registration.value == "registered"
