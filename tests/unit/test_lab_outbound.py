"""The lab registrar's SIP outbound (RFC 5626 §6) and GRUU (RFC 5627 §5) behaviour, sans-IO
with fake clocks: bindings keyed by (AoR, instance-id, reg-id), ``Require: outbound`` and
``Flow-Timer``, the 400/439 refusals, ``pub-gruu``/``temp-gruu`` in the 200, GRUU lookup
(404/480), one flow per instance (:func:`pick_targets`) and the proxy's 430 when every flow
of an instance is gone."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skinnysip.lab.config import ConfigError, LabSettings, settings_from_dict
from skinnysip.lab.proxy import FLOW_GRACE, LabProxy
from skinnysip.lab.registrar import (
    MAX_TEMP_GRUUS_PER_INSTANCE,
    Binding,
    Registrar,
    pick_targets,
)
from skinnysip.sip.message import Headers, Request
from skinnysip.sip.transaction import Flow
from skinnysip.sip.uri import NameAddr, SipURI

DOMAIN = "lab.skinnysip"
UUID = "urn:uuid:F81D4FAE-7dec-11d0-a765-00a0c91e6bf6"  # mixed case on purpose: kept as given
OTHER = "urn:uuid:0e3b6a52-8e5c-4c1e-9f6b-3f1f2a7d5c11"
UDP = Flow("udp", ("127.0.0.1", 5070), local=("127.0.0.1", 5060))
UDP2 = Flow("udp", ("127.0.0.1", 5072), local=("127.0.0.1", 5060))
TCP = Flow("tcp", ("127.0.0.1", 40001), connection=111, local=("127.0.0.1", 5060))
TCP2 = Flow("tcp", ("127.0.0.1", 40002), connection=222, local=("127.0.0.1", 5060))
TEMP_GRUU = re.compile(r'^sip:tgruu\.[0-9a-f]{24}@lab\.skinnysip;gr$')


def contact(uri: str = "sip:1001@127.0.0.1:5070", *, instance: str | None = UUID, reg_id: str | None = "1",
            expires: int | None = None) -> str:
    value = f"<{uri}>"
    if instance is not None:
        value += f';+sip.instance="<{instance}>"'
    if reg_id is not None:
        value += f";reg-id={reg_id}"
    if expires is not None:
        value += f";expires={expires}"
    return value


def register(*contacts: str, supported: str | None = "outbound, path", call_id: str = "c1", cseq: int = 1,
             vias: int = 1, path: str | None = None, expires: str | None = "600") -> Request:
    """A REGISTER of 1001 with these Contacts, ``vias`` Via fields (hops) and optional fields."""
    fields = [("Via", f"SIP/2.0/UDP 127.0.0.{i + 1}:5070;branch=z9hG4bKv{i}") for i in range(vias)]
    fields += [("From", f"<sip:1001@{DOMAIN}>;tag=a"), ("To", f"<sip:1001@{DOMAIN}>"), ("Call-ID", call_id),
               ("CSeq", f"{cseq} REGISTER"), ("Supported", supported), ("Path", path),
               *(("Contact", value) for value in contacts), ("Expires", expires)]
    h = Headers()
    for name, value in fields:
        if value is not None:
            h.add(name, value)
    return Request("REGISTER", f"sip:{DOMAIN}", h)


def registrar() -> Registrar:
    return Registrar({"1001", "1002"}, domain=DOMAIN, flow_timer=120, flow_timer_udp=29)


def header(outcome_headers: list[tuple[str, str]], name: str) -> list[str]:
    return [v for n, v in outcome_headers if n == name]


def contacts_of(outcome_headers: list[tuple[str, str]]) -> list[NameAddr]:
    return [NameAddr.parse(v) for v in header(outcome_headers, "Contact")]


# -- SIP outbound (RFC 5626 §6) ---------------------------------------------------------------

def test_outbound_binding_is_replaced_by_instance_and_reg_id_from_a_new_flow() -> None:
    reg = registrar()
    first = reg.register("1001", register(contact("sip:1001@127.0.0.1:5070")), UDP, 0.0)
    assert first.code == 200
    assert header(first.headers, "Require") == ["outbound"]
    assert header(first.headers, "Flow-Timer") == ["29"]  # a UDP flow
    [binding] = reg.lookup("1001", 1.0)
    assert (binding.instance, binding.reg_id, binding.outbound, binding.flow) == (UUID, 1, True, UDP)
    # the UA lost its flow and registers again over a new TCP connection: new Contact URI, new Call-ID
    second = reg.register("1001", register(contact("sip:1001@127.0.0.1:40001;transport=tcp"), call_id="c2"),
                          TCP, 10.0)
    assert second.code == 200 and header(second.headers, "Flow-Timer") == ["120"]  # a stream
    [binding] = reg.lookup("1001", 11.0)  # replaced, not added (RFC 3261 alone would keep both)
    assert binding.uri == "sip:1001@127.0.0.1:40001;transport=tcp" and binding.flow == TCP
    # the second flow of the same instance (reg-id 2) is a binding of its own
    assert reg.register("1001", register(contact("sip:1001@127.0.0.1:40002;transport=tcp", reg_id="2"),
                                         call_id="c3"), TCP2, 12.0).code == 200
    assert sorted(b.reg_id or 0 for b in reg.lookup("1001", 13.0)) == [1, 2]
    # expires=0 for (instance, reg-id 1) under any Contact URI removes that binding only
    gone = reg.register("1001", register(contact("sip:1001@10.9.9.9:1", expires=0), call_id="c2", cseq=2),
                        TCP, 14.0)
    assert gone.code == 200 and header(gone.headers, "Require") == ["outbound"]
    assert [b.reg_id for b in reg.lookup("1001", 15.0)] == [2]


def test_without_supported_outbound_reg_id_is_ignored_and_contacts_add_up() -> None:
    reg = registrar()
    for n, (uri, flow) in enumerate((("sip:1001@127.0.0.1:5070", UDP),
                                     ("sip:1001@127.0.0.1:40001;transport=tcp", TCP))):
        out = reg.register("1001", register(contact(uri), supported=None, call_id=f"c{n}"), flow, float(n))
        assert out.code == 200
        assert header(out.headers, "Require") == [] and header(out.headers, "Flow-Timer") == []
    bindings = reg.lookup("1001", 5.0)
    assert len(bindings) == 2 and all(b.reg_id is None and b.instance == UUID for b in bindings)


def test_reg_id_without_instance_is_plain_rfc3261() -> None:
    reg = registrar()
    out = reg.register("1001", register(contact(instance=None)), UDP, 0.0)
    assert out.code == 200 and header(out.headers, "Require") == []
    reg.register("1001", register(contact("sip:1001@127.0.0.1:5072", instance=None), call_id="c2"), UDP, 1.0)
    assert [(b.reg_id, b.instance) for b in reg.lookup("1001", 2.0)] == [(None, None), (None, None)]


@pytest.mark.parametrize("bad", ["0", "x1", "-1", "99999999999", ""])
def test_bad_reg_id_is_400(bad: str) -> None:
    out = registrar().register("1001", register(contact(reg_id=bad)), UDP, 0.0)
    assert out.code == 400 and "reg-id" in out.reason


def test_two_contacts_with_reg_id_is_400() -> None:
    reg = registrar()
    out = reg.register("1001", register(contact("sip:1001@127.0.0.1:5070", reg_id="1"),
                                        contact("sip:1001@127.0.0.1:5072", reg_id="2")), UDP, 0.0)
    assert out.code == 400 and "more than one Contact with reg-id" in out.reason
    assert reg.lookup("1001", 1.0) == []
    # without Supported: outbound the same REGISTER is plain RFC 3261: two bindings
    assert reg.register("1001", register(contact("sip:1001@127.0.0.1:5070", reg_id="1"),
                                         contact("sip:1001@127.0.0.1:5072", reg_id="2"), supported=None),
                        UDP, 0.0).code == 200
    assert len(reg.lookup("1001", 1.0)) == 2


def test_outbound_beyond_the_first_hop_needs_a_path_with_ob() -> None:
    reg = registrar()
    refused = reg.register("1001", register(contact(), vias=2), UDP, 0.0)
    assert refused.code == 439 and reg.lookup("1001", 1.0) == []
    ok = reg.register("1001", register(contact(), vias=2, path="<sip:edge.example;lr;ob>"), UDP, 0.0)
    assert ok.code == 200 and header(ok.headers, "Require") == ["outbound"]
    # no reg-id: nothing outbound about it, any number of hops
    assert reg.register("1002", register(contact(reg_id=None), vias=3), UDP, 0.0).code == 200


def test_the_200_echoes_instance_and_reg_id() -> None:
    out = registrar().register("1001", register(contact()), UDP, 0.0)
    [c] = contacts_of(out.headers)
    assert c.instance == UUID and c.params["reg-id"] == "1" and c.params["expires"] == "600"


def test_flow_timer_settings_are_checked_and_read_from_toml() -> None:
    settings = settings_from_dict({"registrar": {"flow_timer": 60, "flow_timer_udp": 15}})
    assert (settings.flow_timer, settings.flow_timer_udp) == (60, 15)
    assert (LabSettings().flow_timer, LabSettings().flow_timer_udp) == (120, 29)
    with pytest.raises(ConfigError, match="registrar.flow_timer_udp"):
        LabSettings(flow_timer_udp=0).validate()
    proxy = LabProxy(settings)
    assert (proxy.registrar.flow_timer, proxy.registrar.flow_timer_udp) == (60, 15)
    assert proxy.endpoint.transport.answer_stun  # RFC 5626 §8: STUN on the SIP UDP ports


# -- GRUU (RFC 5627 §5) -----------------------------------------------------------------------

def test_gruus_only_when_supported_and_with_an_instance() -> None:
    reg = registrar()
    out = reg.register("1001", register(contact(reg_id=None), supported="gruu"), UDP, 0.0)
    [c] = contacts_of(out.headers)
    assert c.params["pub-gruu"] == f'"sip:1001@{DOMAIN};gr={UUID}"'  # the AoR + gr=instance, as given
    temp = c.params["temp-gruu"] or ""
    assert TEMP_GRUU.match(temp.strip('"')), temp
    assert "1001" not in temp  # opaque: it does not name the AoR
    assert header(out.headers, "Require") == []  # GRUU alone is not outbound
    # no Supported: gruu → no GRUU parameters, though the binding has an instance-id
    plain = reg.register("1001", register(contact(reg_id=None), supported=None, cseq=2), UDP, 1.0)
    [c] = contacts_of(plain.headers)
    assert "pub-gruu" not in c.params and "temp-gruu" not in c.params
    # Supported: gruu without +sip.instance → none either
    other = reg.register("1002", register(contact("sip:1002@127.0.0.1:5080", instance=None, reg_id=None),
                                          supported="gruu"), UDP, 0.0)
    [c] = contacts_of(other.headers)
    assert "pub-gruu" not in c.params and "temp-gruu" not in c.params


def test_outbound_and_gruu_together() -> None:
    out = registrar().register("1001", register(contact(), supported="outbound, gruu, path"), TCP, 0.0)
    [c] = contacts_of(out.headers)
    assert header(out.headers, "Require") == ["outbound"] and "pub-gruu" in c.params and "temp-gruu" in c.params


def test_public_gruu_routes_to_that_instance_only() -> None:
    reg = registrar()
    reg.register("1001", register(contact(reg_id=None), supported="gruu"), UDP, 0.0)
    reg.register("1001", register(contact("sip:1001@127.0.0.1:5090", instance=None, reg_id=None),
                                  supported="gruu", call_id="c2"), UDP, 0.0)
    reg.register("1001", register(contact("sip:1001@127.0.0.1:5092", instance=OTHER, reg_id=None),
                                  supported="gruu", call_id="c3"), UDP, 0.0)
    assert len(reg.lookup("1001", 1.0)) == 3
    found = reg.gruu_bindings(SipURI.parse(f"sip:1001@{DOMAIN};gr={UUID}"), 1.0)
    assert isinstance(found, list) and [b.uri for b in found] == ["sip:1001@127.0.0.1:5070"]
    escaped = reg.gruu_bindings(SipURI.parse(f"sip:1001@{DOMAIN};gr={UUID.replace(':', '%3A')}"), 1.0)
    assert isinstance(escaped, list) and len(escaped) == 1
    # the instance-id compares case-sensitively (RFC 5626 §4.1: a URN as given)
    assert reg.gruu_bindings(SipURI.parse(f"sip:1001@{DOMAIN};gr={UUID.lower()}"), 1.0)[0] == 480
    assert reg.gruu_bindings(SipURI.parse(f"sip:1002@{DOMAIN};gr={UUID}"), 1.0)[0] == 480  # known AoR, no such
    assert reg.gruu_bindings(SipURI.parse(f"sip:9999@{DOMAIN};gr={UUID}"), 1.0)[0] == 404  # unknown AoR
    assert reg.gruu_bindings(SipURI.parse(f"sip:1001@{DOMAIN};gr={UUID}"), 700.0)[0] == 480  # expired


def test_temporary_gruus_route_until_forgotten() -> None:
    reg = registrar()
    first = reg.register("1001", register(contact(reg_id=None), supported="gruu"), UDP, 0.0)
    temp1 = (contacts_of(first.headers)[0].params["temp-gruu"] or "").strip('"')
    refresh = reg.register("1001", register(contact(reg_id=None), supported="gruu", cseq=2), UDP, 10.0)
    temp2 = (contacts_of(refresh.headers)[0].params["temp-gruu"] or "").strip('"')
    assert temp1 != temp2  # a new one per refresh, and the old one still works (§5.2)
    for temp in (temp1, temp2):
        found = reg.gruu_bindings(SipURI.parse(temp), 11.0)
        assert isinstance(found, list) and [b.instance for b in found] == [UUID]
    assert reg.gruu_bindings(SipURI.parse(f"sip:tgruu.{'0' * 24}@{DOMAIN};gr"), 11.0)[0] == 404
    assert reg.gruu_bindings(SipURI.parse(temp2), 900.0)[0] == 480  # remembered, nothing registered
    # the UA restarted (a new Call-ID replaces its binding): the old temporary GRUUs are void
    reg.register("1001", register(contact(reg_id=None), supported="gruu", call_id="reboot"), UDP, 1000.0)
    assert reg.gruu_bindings(SipURI.parse(temp2), 1001.0)[0] == 404
    [after] = reg.lookup("1001", 1001.0)
    assert reg.temp_gruu(after) not in (None, temp1, temp2)
    # a refresh without Supported: gruu keeps the binding's temporary GRUU, not a forgotten one
    reg.register("1001", register(contact(reg_id=None), supported=None, call_id="reboot", cseq=2), UDP, 1002.0)
    assert reg.temp_gruu(reg.lookup("1001", 1003.0)[0]) == after.temp_gruu


def test_temporary_gruus_are_bounded_per_instance() -> None:
    reg = registrar()
    temps = []
    for cseq in range(1, MAX_TEMP_GRUUS_PER_INSTANCE + 4):
        out = reg.register("1001", register(contact(reg_id=None), supported="gruu", cseq=cseq), UDP, float(cseq))
        temps.append((contacts_of(out.headers)[0].params["temp-gruu"] or "").strip('"'))
    alive = [t for t in temps if isinstance(reg.gruu_bindings(SipURI.parse(t), 20.0), list)]
    assert alive == temps[-MAX_TEMP_GRUUS_PER_INSTANCE:]


# -- one flow per instance; 430 ---------------------------------------------------------------

def binding(reg_id: int | None, flow: Flow, instance: str | None = UUID, updated: float = 0.0) -> Binding:
    uri = f"sip:1001@127.0.0.1:{flow.remote[1]}"
    return Binding("1001", NameAddr(None, SipURI.parse(uri)), uri, 1000.0, flow, "c", 1, instance=instance,
                   reg_id=reg_id, updated=updated)


def test_pick_targets_one_live_flow_per_instance() -> None:
    one, two, plain = binding(1, TCP), binding(2, TCP2), binding(None, UDP, instance=None)
    dead = {111}

    def alive(b: Binding) -> bool:
        return b.flow.connection not in dead

    chosen, failed = pick_targets([one, two, plain], alive)
    assert chosen == [two, plain] and not failed  # reg-id 1's connection is gone: reg-id 2's flow
    dead.add(222)
    chosen, failed = pick_targets([one, two, plain], alive)
    assert chosen == [plain] and failed
    dead.clear()
    chosen, failed = pick_targets([two, one], alive)
    assert chosen == [one] and not failed  # the lowest reg-id first
    older, newer = binding(None, UDP, updated=1.0), binding(None, UDP, updated=5.0)
    assert pick_targets([older, newer], alive) == ([newer], False)  # one per instance: the newest


def test_proxy_answers_430_when_every_flow_of_the_instance_is_gone() -> None:
    """The proxy's target choice: a TCP connection id the transport does not hold is a
    failed flow (RFC 5626 §5.3): the plain AoR and its GRUU get 430; a UDP flow lives."""
    proxy = LabProxy(LabSettings(domain=DOMAIN, sip_port=0, sips_port=0, sccp_port=0))
    now = time.monotonic()  # the proxy's clock
    proxy.registrar.register("1001", register(contact("sip:1001@127.0.0.1:40001;transport=tcp"),
                                              supported="outbound, gruu"), TCP, now)
    assert 111 not in proxy.endpoint.transport.connections
    assert proxy._targets("1001") == (430, "Flow Failed")
    assert proxy._gruu_targets(SipURI.parse(f"sip:1001@{DOMAIN};gr={UUID}")) == (430, "Flow Failed")
    assert proxy._gruu_targets(SipURI.parse(f"sip:1001@{DOMAIN};gr={OTHER}"))[0] == 480
    assert proxy._gruu(f"sip:1001@{DOMAIN};gr={UUID}") is not None
    assert proxy._gruu(f"sip:1001@elsewhere.example;gr={UUID}") is None  # not our domain
    assert proxy._gruu(f"sip:1001@{DOMAIN}") is None
    # reg-id 2 over UDP: the instance is reachable again, over that flow
    proxy.registrar.register("1001", register(contact("sip:1001@127.0.0.1:5070", reg_id="2"), call_id="c2",
                                              supported="outbound, gruu"), UDP, now)
    targets = proxy._targets("1001")
    assert isinstance(targets, list) and [(u, f.transport if f else None) for u, f in targets] == [
        ("sip:1001@127.0.0.1:5070", "udp")]
    row = next(r for r in proxy.bindings() if r.get("regId") == 2)
    assert row["instance"] == UUID and row["pubGruu"] == f"sip:1001@{DOMAIN};gr={UUID}"
    assert TEMP_GRUU.match(row["tempGruu"])


def test_a_path_is_kept_routed_through_and_given_back_to_a_ua_that_knows_path() -> None:
    """RFC 3327 §5.3: the registrar keeps the REGISTER's Path with the binding (the proxy routes
    through it), echoes it in the 200 only when the UA supports ``path``; a refresh without
    Path drops it."""
    edge = "<sip:token@127.0.0.9:5060;lr;ob>"
    reg, now = registrar(), time.monotonic()  # the proxy's clock
    out = reg.register("1001", register(contact(), supported="outbound, path", vias=2, path=edge), UDP, now)
    assert out.code == 200 and ("Path", edge) in out.headers and ("Require", "outbound") in out.headers
    assert [b.path for b in reg.lookup("1001", now)] == [(edge,)]
    out = reg.register("1001", register(contact(), supported="outbound", vias=2, path=edge, cseq=2), UDP, now)
    assert out.code == 200 and not any(name == "Path" for name, _ in out.headers)  # stored, not echoed
    proxy = LabProxy(LabSettings(domain=DOMAIN, sip_port=0, sips_port=0, sccp_port=0))
    proxy.registrar = reg
    assert proxy._path("sip:1001@127.0.0.1:5070") == [edge]
    reg.register("1001", register(contact(instance=None, reg_id=None), supported=None, cseq=3), UDP, now)
    assert proxy._path("sip:1001@127.0.0.1:5070") == []


def test_a_silent_udp_flow_fails_only_when_outbound_was_agreed() -> None:
    """An outbound UDP binding whose flow sent no STUN keep-alive within Flow-Timer + grace
    is a failed flow (RFC 5626 §4.4); a keep-alive revives it. A plain UDP binding owes no
    keep-alive and stays reachable however long it is silent."""
    proxy = LabProxy(LabSettings(domain=DOMAIN, sip_port=0, sips_port=0, sccp_port=0))
    long_ago = time.monotonic() - proxy.registrar.flow_timer_udp - FLOW_GRACE - 1
    outbound, plain = binding(1, UDP, updated=long_ago), binding(None, UDP2, instance=None, updated=long_ago)
    assert not proxy._alive(outbound) and proxy._alive(plain)
    proxy.endpoint.transport.stun_seen[UDP.remote] = time.monotonic()
    assert proxy._alive(outbound)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126, blacklist_characters='"<>\\'),
               min_size=1, max_size=40))
def test_any_instance_id_gives_a_public_gruu_that_leads_back_to_it(instance: str) -> None:
    """Whatever a phone puts in ``+sip.instance`` (printable, as a quoted string allows), the
    pub-gruu is one well-formed URI whose ``gr`` (escaped, RFC 5627 §3.1) finds that binding
    again — a ``?``, ``;`` or ``=`` in the instance must not cut the URI short."""
    reg = registrar()
    out = reg.register("1001", register(f'<sip:1001@127.0.0.1:5070>;+sip.instance="<{instance}>";reg-id=1',
                                        supported="outbound, path, gruu"), Flow("udp", ("127.0.0.1", 5070)), 0.0)
    assert out.code == 200, out.reason
    [contact] = [NameAddr.parse(v) for name, v in out.headers if name == "Contact"]
    pub = SipURI.parse((contact.params.get("pub-gruu") or "").strip('"'))
    found = reg.gruu_bindings(pub, 1.0)
    assert isinstance(found, list) and [b.instance for b in found] == [instance]
