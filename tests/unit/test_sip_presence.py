"""PIDF (RFC 3863/4479/4480) and dialog-info (RFC 4235) bodies, as presence servers and PBXs
write them, and the busy-lamp view a BLF key shows."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skinnysip.sip.presence import (
    MAX_BODY_BYTES,
    DialogInfo,
    DialogInfoDialog,
    DialogInfoView,
    PresenceDocument,
    PresenceError,
    PresenceTuple,
    build_dialog_info,
    build_pidf,
    parse_dialog_info,
    parse_pidf,
)

# --- PIDF ------------------------------------------------------------------------------------

BARESIP_PIDF = b"""<?xml version="1.0" encoding="UTF-8" standalone="no"?>\r
<presence xmlns="urn:ietf:params:xml:ns:pidf"\r
    xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"\r
    xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid"\r
    entity="sip:alice@example.com">\r
  <dm:person id="p4159"><rpid:activities/><rpid:note>Online</rpid:note></dm:person>\r
  <tuple id="t4109">\r
    <status>\r
      <basic>open</basic>\r
    </status>\r
    <contact>sip:alice@example.com</contact>\r
  </tuple>\r
</presence>\r
"""

# pjsip (and so Asterisk's res_pjsip PIDF, linphone) put the activity in a data-model person
BUSY_PERSON_PIDF = b"""<?xml version="1.0" encoding="UTF-8"?>
<presence entity="sip:1001@pbx.example.com" xmlns="urn:ietf:params:xml:ns:pidf"
          xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid">
 <tuple id="pj0x7f">
  <status><basic>open</basic></status>
  <contact>sip:1001@192.0.2.7:5060</contact>
  <timestamp>2024-05-01T10:00:00Z</timestamp>
 </tuple>
 <dm:person id="pj0x80">
  <rpid:activities><rpid:busy/></rpid:activities>
  <dm:note>Busy</dm:note>
 </dm:person>
</presence>
"""

SEVERAL_TUPLES_PIDF = b"""<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"
          xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="pres:someone@example.com">
  <note xml:lang="en">Lunch until 2</note>
  <tuple id="desk">
    <status><basic>CLOSED</basic></status>
    <contact priority="0.8">sip:someone@desk.example.com</contact>
    <note>Desk phone</note>
    <note>  </note>
  </tuple>
  <tuple id="mobile">
    <status><basic>open</basic></status>
    <contact>tel:+15551234567</contact>
    <note>  Mobile  </note>
  </tuple>
  <tuple id="pager"><contact>sip:pager@example.com</contact></tuple>
  <dm:person id="p1">
    <rpid:activities>
      <rpid:note>lunch note is not a person note</rpid:note>
      <rpid:lunch/><rpid:on-the-phone/><rpid:lunch/><rpid:other> Dentist </rpid:other><rpid:other/>
    </rpid:activities>
    <dm:note>In a call</dm:note>
  </dm:person>
  <note>Back at 2</note>
</presence>
"""


def test_a_baresip_pidf_with_an_rpid_note() -> None:
    doc = parse_pidf(BARESIP_PIDF)
    assert doc == PresenceDocument("sip:alice@example.com",
                                   (PresenceTuple("t4109", "open", "sip:alice@example.com", ()),),
                                   ("Online",), ())
    assert doc.basic == "open"


def test_a_busy_person_activity() -> None:
    doc = parse_pidf(BUSY_PERSON_PIDF)
    assert doc.entity == "sip:1001@pbx.example.com"
    assert doc.activities == ("busy",)
    assert doc.notes == ("Busy",)
    assert doc.tuples == (PresenceTuple("pj0x7f", "open", "sip:1001@192.0.2.7:5060", ()),)


def test_several_tuples_notes_and_activities_in_document_order() -> None:
    doc = parse_pidf(SEVERAL_TUPLES_PIDF)
    assert doc.tuples == (
        PresenceTuple("desk", "closed", "sip:someone@desk.example.com", ("Desk phone",)),
        PresenceTuple("mobile", "open", "tel:+15551234567", ("Mobile",)),
        PresenceTuple("pager", None, "sip:pager@example.com", ()),
    )
    assert doc.notes == ("Lunch until 2", "In a call", "Back at 2")
    assert doc.activities == ("lunch", "on-the-phone", "Dentist")
    assert doc.basic == "open"


@pytest.mark.parametrize(("basics", "expected"), [((), None), ((None,), None), (("closed", None), "closed"),
                                                  (("closed", "closed"), "closed"), (("closed", "open"), "open")])
def test_the_overall_basic_status(basics: tuple[str | None, ...], expected: str | None) -> None:
    tuples = tuple(PresenceTuple(f"t{i}", basic, None, ()) for i, basic in enumerate(basics))
    assert PresenceDocument("sip:a@b", tuples, (), ()).basic == expected


def test_documents_without_namespaces_and_with_pre_rfc_rpid_are_read() -> None:
    """Some PBXs send no xmlns at all; X-Lite/eyeBeam used the RPID draft's namespace, inside
    the tuple's status."""
    bare = (b'<presence entity="sip:bob@example.com"><tuple id="1"><status><basic>Open</basic></status>'
            b'<note>hi</note></tuple><person id="p"><activities><away/></activities><note>gone</note></person>'
            b"</presence>")
    assert parse_pidf(bare) == PresenceDocument(
        "sip:bob@example.com", (PresenceTuple("1", "open", None, ("hi",)),), ("gone",), ("away",))
    draft = (b'<?xml version="1.0"?><presence xmlns="urn:ietf:params:xml:ns:pidf" '
             b'xmlns:es="urn:ietf:params:xml:ns:pidf:status:rpid" entity="sip:carol@example.com">'
             b'<tuple id="t"><status><basic>open</basic><es:activities><es:activity>x</es:activity>'
             b"<es:on-the-phone/></es:activities></status></tuple></presence>")
    assert parse_pidf(draft).activities == ("activity", "on-the-phone")
    foreign = (b'<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:x="urn:example:x" entity="sip:d@e">'
               b"<x:tuple/><x:note>no</x:note><tuple id='t'><x:status><basic>open</basic></x:status>"
               b"<x:activities><x:busy/></x:activities></tuple></presence>")
    assert parse_pidf(foreign) == PresenceDocument("sip:d@e", (PresenceTuple("t", None, None, ()),), (), ())


def test_a_utf8_bom_and_a_lying_encoding_declaration() -> None:
    body = b'\xef\xbb\xbf<?xml version="1.0" encoding="ISO-8859-1"?><presence xmlns="urn:ietf:params:xml:ns:pidf"' \
           b' entity="sip:j\xc3\xb6rg@example.com"><note>caf\xc3\xa9</note></presence>'
    doc = parse_pidf(body)
    assert doc.entity == "sip:jörg@example.com" and doc.notes == ("café",) and doc.basic is None


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE presence [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:a@b"><note>&lol9;</note></presence>
"""


@pytest.mark.parametrize(("body", "reason"), [
    (b'<presence xmlns="urn:ietf:params:xml:ns:pidf"><tuple id="t"/></presence>', "no entity attribute"),
    (b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="  "/>', "no entity attribute"),
    (b'<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" entity="sip:a@b"/>', "root element is <dialog-info>"),
    (b'<presence xmlns="urn:example:other" entity="sip:a@b"/>', "in namespace 'urn:example:other'"),
    (b'<presence entity="sip:a@b"><tuple><status><basic>open</basic></status></tuple></presence>',
     "<tuple> has no id"),
    (b'<presence entity="sip:a@b"><tuple id="t"><status><basic>maybe</basic></status></tuple></presence>',
     "neither open nor closed"),
    (b'<presence entity="sip:a@b"><tuple id="t"><status><basic/></status></tuple></presence>',
     "neither open nor closed"),
    (BILLION_LAUGHS, "DOCTYPE"),
    (b'<!DOCTYPE presence SYSTEM "http://attacker.example/x.dtd"><presence entity="sip:a@b"/>', "DOCTYPE"),
    (b'<presence entity="sip:a@b"><note><![CDATA[<!ENTITY x "y">]]></note></presence>', "ENTITY"),
    (b'<presence entity="sip:caf\xe9@example.com"/>', "not UTF-8"),
    (b"\xff\xfe<\x00p\x00/\x00>\x00", "not UTF-8"),
    (b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:a@b"><tuple id="t"><stat', "not well-formed"),
    (b"", "not well-formed"),
    (b"presence", "not well-formed"),
    (b'<presence entity="sip:a@b"><rpid:activities/></presence>', "not well-formed"),  # unbound prefix
    (b'<presence entity="sip:a@b"><note>\x01</note></presence>', "not well-formed"),
    (b'<presence entity="sip:a@b"/>' + b" " * MAX_BODY_BYTES, "bytes (at most 65536)"),
])
def test_malformed_pidf_is_refused_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(PresenceError) as raised:
        parse_pidf(body)
    assert reason in str(raised.value)


def test_a_body_of_exactly_64_kib_is_still_read() -> None:
    head = b'<presence entity="sip:a@b"/>'
    assert parse_pidf(head + b" " * (MAX_BODY_BYTES - len(head))).entity == "sip:a@b"


def test_deep_nesting_is_harmless() -> None:
    depth = (MAX_BODY_BYTES - 100) // 7
    body = b'<presence entity="sip:a@b"><tuple id="t">' + b"<a>" * depth + b"</a>" * depth + b"</tuple></presence>"
    assert parse_pidf(body).tuples == (PresenceTuple("t", None, None, ()),)


def test_build_pidf_writes_a_tuple_and_a_person() -> None:
    body = build_pidf("sip:1001@lab.skinnysip", "open", note='On the phone & "busy" <really>',
                      activity="on-the-phone", contact="sip:1001@192.0.2.5:5060")
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<presence xmlns="urn:ietf:params:xml:ns:pidf"')
    assert b"<rpid:activities><rpid:on-the-phone/></rpid:activities>" in body
    assert b"<note>On the phone &amp; &quot;busy&quot; &lt;really&gt;</note>" in body
    assert b'<dm:person id="skinnysip-person">' in body
    assert parse_pidf(body) == PresenceDocument(
        "sip:1001@lab.skinnysip",
        (PresenceTuple("skinnysip", "open", "sip:1001@192.0.2.5:5060", ('On the phone & "busy" <really>',)),),
        ('On the phone & "busy" <really>',), ("on-the-phone",))
    plain = build_pidf("sip:a@b", "closed")
    assert b"person" not in plain and b"<note>" not in plain
    assert parse_pidf(plain) == PresenceDocument("sip:a@b", (PresenceTuple("skinnysip", "closed", None, ()),), (), ())
    # an activity RFC 4480 does not name travels as <rpid:other>
    assert b"<rpid:other>Gone fishing</rpid:other>" in build_pidf("sip:a@b", "open", activity=" Gone fishing ")
    assert parse_pidf(build_pidf("sip:a@b", "open", activity="Gone fishing")).activities == ("Gone fishing",)
    # a blank note or activity is as good as none
    assert build_pidf("sip:a@b", "closed", note=" ", activity="") == plain


@pytest.mark.parametrize("kwargs", [
    {"basic": "Open"}, {"basic": "busy"}, {"entity": " "}, {"activity": "\x00"}, {"tuple_id": "1abc"},
    {"tuple_id": 'a"b'}, {"tuple_id": ""}, {"note": "a\x00b"}, {"entity": "sip:\ufffe@b"}, {"contact": "\x1b[2J"},
])
def test_build_pidf_refuses_what_it_cannot_write(kwargs: dict[str, str]) -> None:
    arguments = {"entity": "sip:a@b", "basic": "open", **kwargs}
    with pytest.raises(ValueError):
        build_pidf(**arguments)  # type: ignore[arg-type]


# text XML 1.0 can carry (no controls but tab/CR/LF, no surrogates, no U+FFFE/U+FFFF)
_XML_TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Cn"), whitelist_characters="\t\r\n"),
                    max_size=40)


@settings(max_examples=200, deadline=None)
@given(entity=_XML_TEXT.filter(lambda s: s.strip() != ""), note=st.none() | _XML_TEXT,
       activity=st.none() | st.sampled_from(["away", "busy", "on-the-phone", "unknown"]) | _XML_TEXT,
       basic=st.sampled_from(["open", "closed"]), contact=st.none() | _XML_TEXT)
def test_pidf_round_trips(entity: str, note: str | None, activity: str | None, basic: str,
                          contact: str | None) -> None:
    doc = parse_pidf(build_pidf(entity, basic, note=note, activity=activity, contact=contact))
    notes = (note.strip(),) if note and note.strip() else ()
    assert doc.entity == entity.strip()
    assert doc.tuples == (PresenceTuple("skinnysip", basic, contact.strip() or None if contact else None, notes),)
    person = activity is not None and activity.strip() != ""
    assert doc.activities == ((activity.strip(),) if person and activity else ())
    assert doc.notes == (notes if person else ())
    assert doc.basic == basic


# --- dialog-info -----------------------------------------------------------------------------

KAMAILIO_EARLY = b"""<?xml version="1.0"?>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="00000000001" state="full" entity="sip:alice@example.com">
  <dialog id="a84b4c76e66710" call-id="a84b4c76e66710@pc33.example.com" local-tag="1928301774" remote-tag="" direction="initiator">
    <state>early</state>
    <local>
      <identity display="Alice">sip:alice@example.com</identity>
      <target uri="sip:alice@192.0.2.10:5060"/>
    </local>
    <remote>
      <identity display="Bob">sip:bob@example.com</identity>
      <target uri="sip:bob@example.com"/>
    </remote>
  </dialog>
</dialog-info>
"""

ASTERISK_CONFIRMED = b"""<?xml version="1.0" encoding="UTF-8"?>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="7" state="full" entity="sip:1001@192.0.2.1">
 <dialog id="1001" direction="recipient">
  <state>confirmed</state>
 </dialog>
</dialog-info>
"""

# Asterisk when ringing: remote before local, <state> last, empty tags
ASTERISK_RINGING = b"""<?xml version="1.0" encoding="UTF-8"?>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="8" state="full" entity="sip:1001@192.0.2.1">
 <dialog id="1001" call-id="pickup-1b2c" local-tag="" remote-tag="" direction="recipient">
  <remote><identity display="Carol">sip:1002@192.0.2.1</identity><target uri="sip:1002@192.0.2.1"/></remote>
  <local><identity display="1001">sip:1001@192.0.2.1</identity><target uri="sip:1001@192.0.2.1"/></local>
  <state>early</state>
 </dialog>
</dialog-info>
"""

# Asterisk when idle: one terminated dialog
ASTERISK_IDLE = b"""<?xml version="1.0" encoding="UTF-8"?>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="9" state="full" entity="sip:1001@192.0.2.1">
 <dialog id="1001"><state>terminated</state></dialog>
</dialog-info>
"""

EMPTY_FULL = (b'<?xml version="1.0"?>\n<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="0" '
              b'state="full" entity="sip:bob@example.com"/>\n')


def test_kamailio_pua_dialoginfo_early_as_initiator() -> None:
    info = parse_dialog_info(KAMAILIO_EARLY)
    assert info == DialogInfo(1, "full", "sip:alice@example.com", (DialogInfoDialog(
        id="a84b4c76e66710", state="early", call_id="a84b4c76e66710@pc33.example.com", local_tag="1928301774",
        direction="initiator", local_identity="sip:alice@example.com", local_target="sip:alice@192.0.2.10:5060",
        remote_identity="sip:bob@example.com", remote_target="sip:bob@example.com"),))
    view = DialogInfoView()
    assert view.apply(info) and view.summary == "calling" and view.version == 1


def test_asterisk_confirmed_ringing_and_idle() -> None:
    view = DialogInfoView()
    confirmed = parse_dialog_info(ASTERISK_CONFIRMED)
    assert confirmed.dialogs == (DialogInfoDialog("1001", "confirmed", direction="recipient"),)
    assert view.apply(confirmed) and view.summary == "busy"
    ringing = parse_dialog_info(ASTERISK_RINGING)
    assert ringing.dialogs[0] == DialogInfoDialog(
        "1001", "early", call_id="pickup-1b2c", direction="recipient", local_identity="sip:1001@192.0.2.1",
        local_target="sip:1001@192.0.2.1", remote_identity="sip:1002@192.0.2.1", remote_target="sip:1002@192.0.2.1")
    assert view.apply(ringing) and view.summary == "ringing"
    assert view.apply(parse_dialog_info(ASTERISK_IDLE)) and view.summary == "idle" and view.dialogs == {}


def test_an_empty_full_document_means_idle() -> None:
    info = parse_dialog_info(EMPTY_FULL)
    assert info == DialogInfo(0, "full", "sip:bob@example.com", ())
    view = DialogInfoView()
    assert view.summary == "idle" and view.version is None
    assert view.apply(info) and view.summary == "idle" and view.version == 0


def test_every_field_of_a_dialog_and_lenient_spelling() -> None:
    body = b"""<dialog-info version=" 12 " state="Partial" entity=" sip:x@y ">
      <dialog id="d1" call-id="c1" local-tag="lt" remote-tag="rt" direction="Recipient">
        <state event="Remote-BYE" code="487">TERMINATED</state>
        <duration>274</duration>
        <local><identity>sip:x@y</identity><target uri="sip:x@host"><param pname="+sip.rendering" pval="no"/></target></local>
        <remote><identity display="Z">  sip:z@y  </identity></remote>
      </dialog>
      <unknown-extension/>
    </dialog-info>"""
    assert parse_dialog_info(body) == DialogInfo(12, "partial", "sip:x@y", (DialogInfoDialog(
        "d1", "terminated", "c1", "lt", "rt", "recipient", "remote-bye", 487, 274, "sip:x@y", "sip:x@host",
        "sip:z@y", None),))


_DI = '<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="{v}" state="{s}" entity="sip:a@b">{d}</dialog-info>'


def _di(dialog: str = "", version: str = "1", state: str = "full") -> bytes:
    return _DI.format(v=version, s=state, d=dialog).encode()


@pytest.mark.parametrize(("body", "reason"), [
    (_di('<dialog id="d"><state>ringing</state></dialog>'), "state 'ringing' is not one of"),
    (_di('<dialog id="d"><state/></dialog>'), "state '' is not one of"),
    (_di('<dialog id="d"/>'), "has no <state>"),
    (_di("<dialog><state>early</state></dialog>"), "<dialog> has no id"),
    (_di('<dialog id="d" direction="sideways"><state>early</state></dialog>'), "neither initiator nor recipient"),
    (_di('<dialog id="d"><state code="abc">terminated</state></dialog>'), "not a SIP status code"),
    (_di('<dialog id="d"><state code="99">terminated</state></dialog>'), "not a SIP status code"),
    (_di('<dialog id="d"><state>confirmed</state><duration>-1</duration></dialog>'), "<duration>"),
    (_di('<dialog id="d"><state>confirmed</state><duration/></dialog>'), "<duration>"),
    (_di(version="one"), "version 'one' is not a non-negative decimal number"),
    (_di(version="-1"), "not a non-negative decimal number"),
    (_di(version="+1"), "not a non-negative decimal number"),
    (_di(version="1_0"), "not a non-negative decimal number"),
    (_di(version="\u0661"), "not a non-negative decimal number"),  # an Arabic-Indic one: int() would take it
    (_di(version="9" * 5000), "not a non-negative decimal number"),
    (_di(state="delta"), "neither full nor partial"),
    (b'<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" state="full" entity="sip:a@b"/>', "no version"),
    (b'<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="1" entity="sip:a@b"/>', "no state"),
    (b'<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="1" state="full"/>', "no entity"),
    (BARESIP_PIDF, "root element is <presence>"),
    (_di()[:-5], "not well-formed"),
    (b'<!DOCTYPE d [<!ENTITY e SYSTEM "file:///etc/passwd">]><dialog-info>&e;</dialog-info>', "DOCTYPE"),
    (b'<dialog-info entity="sip:\x80@b"/>', "not UTF-8"),
])
def test_malformed_dialog_info_is_refused_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(PresenceError) as raised:
        parse_dialog_info(body)
    assert reason in str(raised.value)


def test_build_dialog_info_writes_what_kamailio_writes() -> None:
    dialog = DialogInfoDialog("a84b", "early", call_id="c@h", local_tag="1928", direction="initiator",
                              local_identity="sip:alice@example.com", local_target="sip:alice@192.0.2.10",
                              remote_identity="sip:bob@example.com")
    body = build_dialog_info("sip:alice@example.com", 3, [dialog])
    assert body == (b'<?xml version="1.0" encoding="UTF-8"?>\n'
                    b'<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="3" state="full" '
                    b'entity="sip:alice@example.com">\n'
                    b'  <dialog id="a84b" call-id="c@h" local-tag="1928" direction="initiator">\n'
                    b"    <state>early</state>\n"
                    b"    <local>\n"
                    b"      <identity>sip:alice@example.com</identity>\n"
                    b'      <target uri="sip:alice@192.0.2.10"/>\n'
                    b"    </local>\n"
                    b"    <remote>\n"
                    b"      <identity>sip:bob@example.com</identity>\n"
                    b"    </remote>\n"
                    b"  </dialog>\n"
                    b"</dialog-info>\n")
    assert parse_dialog_info(body) == DialogInfo(3, "full", "sip:alice@example.com", (dialog,))
    empty = build_dialog_info("sip:a@b", 0, [], state="partial")
    assert parse_dialog_info(empty) == DialogInfo(0, "partial", "sip:a@b", ())


@pytest.mark.parametrize(("entity", "version", "dialog", "state"), [
    ("sip:a@b", 1, None, "Full"), (" ", 1, None, "full"), ("sip:a@b", -1, None, "full"),
    ("sip:a@b", True, None, "full"), ("sip:a@b", 1.0, None, "full"), ("sip:a@b\x00", 1, None, "full"),
    ("sip:a@b", 1, DialogInfoDialog(" ", "early"), "full"),
    ("sip:a@b", 1, DialogInfoDialog("d", "ringing"), "full"),
    ("sip:a@b", 1, DialogInfoDialog("d", "early", direction="outbound"), "full"),
    ("sip:a@b", 1, DialogInfoDialog("d", "early", code=99), "full"),
    ("sip:a@b", 1, DialogInfoDialog("d", "early", duration=-5), "full"),
    ("sip:a@b", 1, DialogInfoDialog("d", "early", call_id="\x07"), "full"),
])
def test_build_dialog_info_refuses_what_it_cannot_write(entity: str, version: int,
                                                        dialog: DialogInfoDialog | None, state: str) -> None:
    with pytest.raises(ValueError):
        build_dialog_info(entity, version, [dialog] if dialog else [], state=state)


_VALUE = _XML_TEXT.map(str.strip).filter(bool)
_OPTIONAL = st.none() | _VALUE
_DIALOGS = st.builds(
    DialogInfoDialog, id=_VALUE, state=st.sampled_from(["trying", "proceeding", "early", "confirmed", "terminated"]),
    call_id=_OPTIONAL, local_tag=_OPTIONAL, remote_tag=_OPTIONAL,
    direction=st.sampled_from([None, "initiator", "recipient"]),
    event=st.none() | st.sampled_from(["cancelled", "rejected", "replaced", "local-bye", "remote-bye", "error"]),
    code=st.none() | st.integers(100, 699), duration=st.none() | st.integers(0, 2**40),
    local_identity=_OPTIONAL, local_target=_OPTIONAL, remote_identity=_OPTIONAL, remote_target=_OPTIONAL)


@settings(max_examples=200, deadline=None)
@given(entity=_VALUE, version=st.integers(0, 2**64), dialogs=st.lists(_DIALOGS, max_size=4),
       state=st.sampled_from(["full", "partial"]))
def test_dialog_info_round_trips(entity: str, version: int, dialogs: list[DialogInfoDialog], state: str) -> None:
    body = build_dialog_info(entity, version, dialogs, state=state)
    assert parse_dialog_info(body) == DialogInfo(version, state, entity, tuple(dialogs))


# --- the busy-lamp view (RFC 4235 §4.1 versions) ---------------------------------------------


def _info(version: int, *dialogs: DialogInfoDialog, state: str = "full") -> DialogInfo:
    return DialogInfo(version, state, "sip:1001@pbx", dialogs)


RINGING = DialogInfoDialog("d1", "early", direction="recipient")
CALLING = DialogInfoDialog("d2", "proceeding", direction="initiator")
TRYING = DialogInfoDialog("d3", "trying")
TALKING = DialogInfoDialog("d4", "confirmed", direction="initiator")


def test_a_partial_document_before_any_full_one_is_not_applied() -> None:
    view = DialogInfoView()
    assert not view.apply(_info(0, RINGING, state="partial"))
    assert view.version is None and view.dialogs == {} and view.summary == "idle"


def test_partial_documents_update_by_id_and_must_count_up_by_one() -> None:
    view = DialogInfoView()
    assert view.apply(_info(4, CALLING))
    assert view.apply(_info(5, RINGING, state="partial"))
    assert set(view.dialogs) == {"d1", "d2"} and view.summary == "ringing"
    assert not view.apply(_info(7, TALKING, state="partial"))  # a gap: re-subscribe for the full state
    assert not view.apply(_info(5, TALKING, state="partial"))  # a repeat
    assert view.version == 5 and set(view.dialogs) == {"d1", "d2"}
    assert view.apply(_info(6, DialogInfoDialog("d1", "confirmed", direction="recipient"), state="partial"))
    assert view.dialogs["d1"].state == "confirmed" and view.summary == "busy"
    assert view.apply(_info(7, DialogInfoDialog("d1", "terminated", event="remote-bye"),
                            DialogInfoDialog("gone", "terminated"), state="partial"))
    assert set(view.dialogs) == {"d2"} and view.summary == "calling" and view.version == 7


def test_a_full_document_replaces_everything_when_newer() -> None:
    view = DialogInfoView()
    assert view.apply(_info(1, RINGING, CALLING))
    assert not view.apply(_info(1, TALKING))   # a repeat of the version
    assert not view.apply(_info(0, TALKING))   # an old one
    assert set(view.dialogs) == {"d1", "d2"}
    assert view.apply(_info(9, TRYING))        # a newer full one may skip versions
    assert set(view.dialogs) == {"d3"} and view.version == 9 and view.summary == "calling"
    assert view.apply(_info(10, DialogInfoDialog("d3", "terminated")))
    assert view.dialogs == {} and view.summary == "idle"


@pytest.mark.parametrize(("dialogs", "lamp"), [
    ((), "idle"), ((TRYING,), "calling"), ((CALLING,), "calling"), ((RINGING,), "ringing"),
    ((CALLING, RINGING), "ringing"), ((RINGING, TALKING), "busy"), ((TALKING, CALLING), "busy"),
    ((DialogInfoDialog("x", "confirmed", direction="recipient"),), "busy"),
    ((DialogInfoDialog("x", "terminated"),), "idle"),
])
def test_the_lamp_precedence_busy_ringing_calling_idle(dialogs: tuple[DialogInfoDialog, ...], lamp: str) -> None:
    view = DialogInfoView()
    assert view.apply(_info(0, *dialogs))
    assert view.summary == lamp


# --- hostile input: only PresenceError or a result -------------------------------------------


def _parse_both(body: bytes) -> None:
    for parse in (parse_pidf, parse_dialog_info):
        try:
            parse(body)
        except PresenceError:
            pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_raise_only_presence_error(body: bytes) -> None:
    _parse_both(body)


_WRAPPERS = [
    '<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="{0}"><tuple id="{0}"><status><basic>{0}</basic>'
    "</status><contact>{0}</contact><note>{0}</note></tuple></presence>",
    '<presence entity="sip:a@b">{0}</presence>',
    '<presence entity="sip:a@b"><person id="p"><activities>{0}</activities><note>{0}</note></person></presence>',
    '<dialog-info version="{0}" state="{0}" entity="{0}"><dialog id="{0}" direction="{0}"><state code="{0}" '
    'event="{0}">{0}</state><duration>{0}</duration></dialog></dialog-info>',
    '<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="1" state="partial" entity="e">{0}'
    "</dialog-info>",
    '<dialog-info version="1" state="full" entity="e"><dialog id="d"><state>early</state>{0}</dialog></dialog-info>',
]

_MARKUP = st.lists(st.sampled_from(list("<>/=\"'&;!?[]-: ax") + [
    "<!DOCTYPE", "<!ENTITY", "<![CDATA[", "]]>", "&amp;", "&#0;", "&#x10FFFF;", "xmlns:", "rpid:", "<other>",
    "</other>", "<a>", "</a>", "open", "early", "full", "1", "\x00", "\ud800"]), max_size=30).map("".join)


@settings(max_examples=200, deadline=None)
@given(wrapper=st.sampled_from(_WRAPPERS), text=st.text(max_size=60) | _MARKUP)
def test_arbitrary_text_wrapped_in_xml_raises_only_presence_error(wrapper: str, text: str) -> None:
    _parse_both(wrapper.format(text).encode("utf-8", "surrogatepass"))
