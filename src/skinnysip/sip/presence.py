"""The two XML bodies a SIP phone reads and writes to watch presence and busy lamps (sans-IO):

* ``application/pidf+xml`` for the ``presence`` event package: PIDF (RFC 3863) with the data
  model's ``<dm:person>`` (RFC 4479) and RPID activities (RFC 4480)::

      <presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:alice@example.com">
        <tuple id="t1"><status><basic>open</basic></status><contact>sip:alice@pc33</contact></tuple>
        <dm:person id="p1"><rpid:activities><rpid:on-the-phone/></rpid:activities></dm:person>
      </presence>

* ``application/dialog-info+xml`` for the ``dialog`` event package (RFC 4235), what a busy-lamp
  field (BLF) key watches; :class:`DialogInfoView` folds a subscription's NOTIFYs into the lamp.

Both parsers use :mod:`xml.etree.ElementTree` (namespace-aware) and are safe with hostile
bytes: bodies over :data:`MAX_BODY_BYTES`, bodies that are not UTF-8, any ``<!DOCTYPE`` or
``<!ENTITY`` (refused before parsing: no entity expansion, no external fetches), XML that is
not well-formed and documents missing what the RFCs require all raise :class:`PresenceError`
— nothing else escapes. The encoding an XML declaration names is ignored: a body is UTF-8.

They are lenient where real servers differ: an element is recognised in its RFC namespace or
in no namespace at all (some PBXs omit ``xmlns``); RPID is also recognised in the pre-RFC draft
namespaces (``urn:ietf:params:xml:ns:pidf:status:rpid``, ``…:pidf:rpid:rpid-person``); a
``<note>`` counts in the PIDF, data-model or RPID namespace; keyword values (``open``,
``confirmed``, ``full``, ``initiator``…) are matched case-insensitively and returned
lower-cased; attribute values and texts are stripped; unknown elements are ignored.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

__all__ = [
    "CONTENT_TYPE_DIALOG_INFO", "CONTENT_TYPE_PIDF", "DIALOG_STATES", "DialogInfo", "DialogInfoDialog",
    "DialogInfoView", "MAX_BODY_BYTES", "NS_DIALOG_INFO", "NS_PIDF", "NS_PIDF_DM", "NS_RPID",
    "PresenceDocument", "PresenceError", "PresenceTuple", "RPID_ACTIVITIES", "build_dialog_info",
    "build_pidf", "parse_dialog_info", "parse_pidf",
]

#: the PIDF body's media type (RFC 3863 §4), carried by NOTIFY/PUBLISH for ``Event: presence``
CONTENT_TYPE_PIDF = "application/pidf+xml"
#: the dialog-info body's media type (RFC 4235 §4), carried by NOTIFY for ``Event: dialog``
CONTENT_TYPE_DIALOG_INFO = "application/dialog-info+xml"

#: bodies longer than this (64 KiB) are refused
MAX_BODY_BYTES = 65536

NS_PIDF = "urn:ietf:params:xml:ns:pidf"                     # RFC 3863 §4.1
NS_PIDF_DM = "urn:ietf:params:xml:ns:pidf:data-model"       # RFC 4479 §4
NS_RPID = "urn:ietf:params:xml:ns:pidf:rpid"                # RFC 4480 §4
NS_DIALOG_INFO = "urn:ietf:params:xml:ns:dialog-info"       # RFC 4235 §4.1

# RPID as the drafts before RFC 4480 named it (X-Lite/eyeBeam, chan_sip's PIDF)
_RPID_NAMESPACES = frozenset({NS_RPID, "urn:ietf:params:xml:ns:pidf:status:rpid",
                              "urn:ietf:params:xml:ns:pidf:rpid:rpid-person", ""})
_PIDF_NAMESPACES = frozenset({NS_PIDF, ""})
_PERSON_NAMESPACES = frozenset({NS_PIDF_DM, NS_PIDF, ""})
_NOTE_NAMESPACES = frozenset({NS_PIDF, NS_PIDF_DM}) | _RPID_NAMESPACES
_DIALOG_NAMESPACES = frozenset({NS_DIALOG_INFO, ""})

#: the activity elements of RFC 4480 §3.2 (``other`` carries free text instead)
RPID_ACTIVITIES = frozenset({
    "appointment", "away", "breakfast", "busy", "dinner", "holiday", "in-transit", "looking-for-work",
    "lunch", "meal", "meeting", "on-the-phone", "performance", "permanent-absence", "playing",
    "presentation", "shopping", "sleeping", "spectator", "steering", "travel", "tv", "unknown",
    "vacation", "working", "worship",
})

#: the ``<state>`` values of a dialog (RFC 4235 §3.7.1)
DIALOG_STATES = frozenset({"trying", "proceeding", "early", "confirmed", "terminated"})
_DIRECTIONS = frozenset({"initiator", "recipient"})
_RINGING_STATES = frozenset({"trying", "proceeding", "early"})

_FORBIDDEN = re.compile(r"<!\s*(?:doctype|entity)", re.IGNORECASE)
_NUMBER = re.compile(r"[0-9]{1,40}")          # ASCII digits only: int() would take "+1", "1_0", "١"
_STATUS_CODE = re.compile(r"[1-6][0-9][0-9]")
# XML 1.0 §2.2 Char, minus nothing: what a document can carry at all
_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# an xs:ID / NCName (XML Namespaces §3), as the tuple and person ids must be; ASCII-leaning
_NCNAME = re.compile(r"[^\W\d][\w.\-]*")


class PresenceError(ValueError):
    """A malformed PIDF or dialog-info body; ``str()`` says what."""


# --- PIDF (RFC 3863) ------------------------------------------------------------------------


@dataclass(frozen=True)
class PresenceTuple:
    """One ``<tuple>`` of a PIDF document (RFC 3863 §4.1.1): ``id``; ``basic``: ``"open"`` or
    ``"closed"`` (lower-cased), None when the tuple has no ``<status><basic>``; ``contact``: the
    ``<contact>`` URI or None; ``notes``: its ``<note>`` texts, stripped, empty ones dropped."""

    id: str
    basic: str | None
    contact: str | None
    notes: tuple[str, ...]


@dataclass(frozen=True)
class PresenceDocument:
    """A PIDF document: ``entity`` (``<presence entity>``, the presentity's URI); ``tuples`` in
    document order; ``notes``: the ``<presence>``-level notes and the ``<dm:person>`` notes
    (RFC 4479 §3.3), in document order; ``activities``: the RPID activities (RFC 4480 §3.2) found
    under any ``<rpid:activities>``, as element local names (``"away"``, ``"on-the-phone"``;
    ``<rpid:other>text</rpid:other>`` gives its text), in order, without duplicates."""

    entity: str
    tuples: tuple[PresenceTuple, ...]
    notes: tuple[str, ...]
    activities: tuple[str, ...]

    @property
    def basic(self) -> str | None:
        """``"open"`` if any tuple is open, ``"closed"`` if some tuple has a basic status and
        none is open, None when no tuple says (RFC 3863 §4.1.4)."""
        statuses = {t.basic for t in self.tuples if t.basic is not None}
        if "open" in statuses:
            return "open"
        return "closed" if statuses else None


def parse_pidf(body: bytes) -> PresenceDocument:
    """Parse an ``application/pidf+xml`` body (RFC 3863 §4, with RFC 4479 ``<dm:person>`` and
    RFC 4480 activities). The root must be ``<presence>`` with an ``entity``; each ``<tuple>``
    needs an ``id``; a ``<basic>`` must be ``open`` or ``closed``. Raises :class:`PresenceError`
    for those, and for any body :func:`parse_pidf` refuses as hostile (see the module doc)."""
    root = _parse_xml(body, "PIDF")
    _expect_root(root, "presence", _PIDF_NAMESPACES, "a PIDF <presence> (RFC 3863 §4.1)")
    entity = _required_attribute(root, "entity", "<presence>")
    tuples: list[PresenceTuple] = []
    notes: list[str] = []
    for child in root:
        namespace, name = _split(child.tag)
        if name == "tuple" and namespace in _PIDF_NAMESPACES:
            tuples.append(_parse_tuple(child))
        elif name == "note" and namespace in _NOTE_NAMESPACES:
            _add_text(notes, child)
        elif name == "person" and namespace in _PERSON_NAMESPACES:
            for grandchild in child:
                if _is(grandchild, "note", _NOTE_NAMESPACES):
                    _add_text(notes, grandchild)
    activities: list[str] = []
    for element in root.iter():
        if _is(element, "activities", _RPID_NAMESPACES):
            for activity in element:
                namespace, name = _split(activity.tag)
                if namespace not in _RPID_NAMESPACES or name == "note":
                    continue
                if name == "other":
                    name = _text(activity)
                if name and name not in activities:
                    activities.append(name)
    return PresenceDocument(entity, tuple(tuples), tuple(notes), tuple(activities))


def _parse_tuple(element: ET.Element) -> PresenceTuple:
    tuple_id = _required_attribute(element, "id", "<tuple>")
    basic: str | None = None
    contact: str | None = None
    notes: list[str] = []
    for child in element:
        namespace, name = _split(child.tag)
        if name == "note" and namespace in _NOTE_NAMESPACES:
            _add_text(notes, child)
        elif namespace not in _PIDF_NAMESPACES:
            continue
        elif name == "status" and basic is None:
            basic_element = _find(child, "basic", _PIDF_NAMESPACES)
            if basic_element is not None:
                basic = _text(basic_element).lower()
                if basic not in ("open", "closed"):
                    raise PresenceError(f"tuple {tuple_id[:40]!r}: <basic>{basic[:40]}</basic> is neither "
                                        "open nor closed (RFC 3863 §4.1.4)")
        elif name == "contact" and contact is None:
            contact = _text(child) or None
    return PresenceTuple(tuple_id, basic, contact, tuple(notes))


def build_pidf(entity: str, basic: str, *, note: str | None = None, activity: str | None = None,
               tuple_id: str = "skinnysip", contact: str | None = None) -> bytes:
    """A UTF-8 ``application/pidf+xml`` body (with an XML declaration) for ``entity``: one
    tuple ``tuple_id`` whose ``<basic>`` is ``basic`` (``"open"``/``"closed"``), with
    ``<contact>`` and ``<note>`` when given (RFC 3863 §4.1); with ``activity`` (an RPID activity
    name such as ``"away"``, ``"busy"``, ``"on-the-phone"``; another text becomes
    ``<rpid:other>``) a ``<dm:person>`` carrying ``<rpid:activities>`` (RFC 4480 §3.2) and the
    note again as ``<dm:note>`` (RFC 4479 §3.3); a blank ``note`` or ``activity`` counts as
    None. Raises ``ValueError`` for another ``basic``, an empty ``entity``, a ``tuple_id`` that
    is not an XML name, or text holding a character XML 1.0 cannot carry. :func:`parse_pidf` reads back what this writes (notes and
    the entity stripped)."""
    if basic not in ("open", "closed"):
        raise ValueError(f"basic status {basic[:40]!r} is neither 'open' nor 'closed' (RFC 3863 §4.1.4)")
    if not entity.strip():
        raise ValueError("a PIDF document needs an entity (RFC 3863 §4.1.1)")
    if not _NCNAME.fullmatch(tuple_id):
        raise ValueError(f"tuple id {tuple_id[:40]!r} is not an XML name (RFC 3863 §4.1.1: xs:ID)")
    for value in (entity, note, contact, activity):
        _check_xml_text(value)
    if note is not None and not note.strip():
        note = None
    if activity is not None and not activity.strip():
        activity = None
    lines = ['<?xml version="1.0" encoding="UTF-8"?>',
             f'<presence xmlns="{NS_PIDF}" xmlns:dm="{NS_PIDF_DM}" xmlns:rpid="{NS_RPID}" '
             f'entity="{_escape(entity)}">',
             f'  <tuple id="{tuple_id}">',
             f"    <status><basic>{basic}</basic></status>"]
    if contact is not None:
        lines.append(f"    <contact>{_escape(contact)}</contact>")
    if note is not None:
        lines.append(f"    <note>{_escape(note)}</note>")
    lines.append("  </tuple>")
    if activity is not None:
        name = activity.strip()
        element = f"<rpid:{name}/>" if name in RPID_ACTIVITIES else f"<rpid:other>{_escape(name)}</rpid:other>"
        lines.append(f'  <dm:person id="{tuple_id}-person">')
        lines.append(f"    <rpid:activities>{element}</rpid:activities>")
        if note is not None:
            lines.append(f"    <dm:note>{_escape(note)}</dm:note>")
        lines.append("  </dm:person>")
    lines.append("</presence>")
    return ("\n".join(lines) + "\n").encode("utf-8")


# --- dialog-info (RFC 4235) -----------------------------------------------------------------


@dataclass(frozen=True)
class DialogInfoDialog:
    """One ``<dialog>`` (RFC 4235 §4.1.2): ``id``; ``state``: ``trying``, ``proceeding``,
    ``early``, ``confirmed`` or ``terminated`` (lower-cased); ``call_id``, ``local_tag``,
    ``remote_tag``; ``direction``: ``"initiator"``, ``"recipient"`` or None; ``event`` and
    ``code``: the ``<state event code>`` attributes (why it ended: ``rejected``, ``remote-bye``…,
    and a SIP status code 100–699); ``duration`` in seconds; the ``<identity>`` text and the
    ``<target uri>`` of ``<local>`` and ``<remote>`` (RFC 4235 §4.1.6)."""

    id: str
    state: str
    call_id: str | None = None
    local_tag: str | None = None
    remote_tag: str | None = None
    direction: str | None = None
    event: str | None = None
    code: int | None = None
    duration: int | None = None
    local_identity: str | None = None
    local_target: str | None = None
    remote_identity: str | None = None
    remote_target: str | None = None


@dataclass(frozen=True)
class DialogInfo:
    """A dialog-info document (RFC 4235 §4.1.1): ``version`` (non-negative, +1 per NOTIFY of a
    subscription), ``state``: ``"full"`` or ``"partial"``, ``entity`` (the watched URI) and its
    ``dialogs`` in document order."""

    version: int
    state: str
    entity: str
    dialogs: tuple[DialogInfoDialog, ...]


def parse_dialog_info(body: bytes) -> DialogInfo:
    """Parse an ``application/dialog-info+xml`` body (RFC 4235 §4). The root must be
    ``<dialog-info>`` with ``version`` (decimal digits), ``state`` (``full``/``partial``) and
    ``entity``; each ``<dialog>`` needs an ``id`` and a ``<state>`` of :data:`DIALOG_STATES`;
    ``direction``, ``code`` (100–699) and ``<duration>`` (seconds), when present, must be valid.
    Raises :class:`PresenceError` for those and for any hostile body (see the module doc)."""
    root = _parse_xml(body, "dialog-info")
    _expect_root(root, "dialog-info", _DIALOG_NAMESPACES, "a <dialog-info> (RFC 4235 §4.1.1)")
    version = _number(_required_attribute(root, "version", "<dialog-info>"), "<dialog-info> version")
    state = _required_attribute(root, "state", "<dialog-info>").lower()
    if state not in ("full", "partial"):
        raise PresenceError(f"<dialog-info> state {state[:40]!r} is neither full nor partial (RFC 4235 §4.1.1)")
    entity = _required_attribute(root, "entity", "<dialog-info>")
    dialogs = tuple(_parse_dialog(child) for child in root if _is(child, "dialog", _DIALOG_NAMESPACES))
    return DialogInfo(version, state, entity, dialogs)


def _parse_dialog(element: ET.Element) -> DialogInfoDialog:
    dialog_id = _required_attribute(element, "id", "<dialog>")
    where = f"dialog {dialog_id[:40]!r}"
    direction = _optional_attribute(element, "direction")
    if direction is not None:
        direction = direction.lower()
        if direction not in _DIRECTIONS:
            raise PresenceError(f"{where}: direction {direction[:40]!r} is neither initiator nor recipient "
                                "(RFC 4235 §4.1.2)")
    state_element = _find(element, "state", _DIALOG_NAMESPACES)
    if state_element is None:
        raise PresenceError(f"{where} has no <state> (RFC 4235 §4.1.2)")
    state = _text(state_element).lower()
    if state not in DIALOG_STATES:
        raise PresenceError(f"{where}: state {state[:40]!r} is not one of {', '.join(sorted(DIALOG_STATES))} "
                            "(RFC 4235 §3.7.1)")
    event = _optional_attribute(state_element, "event")
    code_text = _optional_attribute(state_element, "code")
    code: int | None = None
    if code_text is not None:
        if not _STATUS_CODE.fullmatch(code_text):
            raise PresenceError(f"{where}: state code {code_text[:40]!r} is not a SIP status code 100-699")
        code = int(code_text)
    duration_element = _find(element, "duration", _DIALOG_NAMESPACES)
    duration = None if duration_element is None else _number(_text(duration_element), f"{where}: <duration>")
    local_identity, local_target = _participant(element, "local")
    remote_identity, remote_target = _participant(element, "remote")
    return DialogInfoDialog(
        id=dialog_id, state=state, call_id=_optional_attribute(element, "call-id"),
        local_tag=_optional_attribute(element, "local-tag"),
        remote_tag=_optional_attribute(element, "remote-tag"), direction=direction,
        event=event.lower() if event is not None else None, code=code, duration=duration,
        local_identity=local_identity, local_target=local_target,
        remote_identity=remote_identity, remote_target=remote_target)


def _participant(dialog: ET.Element, name: str) -> tuple[str | None, str | None]:
    """(identity text, target URI) of the dialog's ``<local>`` or ``<remote>`` (RFC 4235 §4.1.6)."""
    element = _find(dialog, name, _DIALOG_NAMESPACES)
    if element is None:
        return None, None
    identity = _find(element, "identity", _DIALOG_NAMESPACES)
    target = _find(element, "target", _DIALOG_NAMESPACES)
    return ((_text(identity) or None) if identity is not None else None,
            _optional_attribute(target, "uri") if target is not None else None)


def build_dialog_info(entity: str, version: int, dialogs: Sequence[DialogInfoDialog], *,
                      state: str = "full") -> bytes:
    """A UTF-8 ``application/dialog-info+xml`` body (RFC 4235 §4.1) for ``entity`` with
    ``version`` and ``state`` (``"full"`` or ``"partial"``) holding ``dialogs``; a dialog's
    None (or empty) fields are left out. Raises ``ValueError`` for an empty ``entity`` or dialog
    id, a negative ``version`` or ``duration``, a state, direction or code the RFC does not
    allow, or text XML 1.0 cannot carry. :func:`parse_dialog_info` reads back the same document
    when its strings are already stripped (and ``state``, ``direction``, ``event`` lower-case)."""
    if state not in ("full", "partial"):
        raise ValueError(f"dialog-info state {state[:40]!r} is neither 'full' nor 'partial' (RFC 4235 §4.1.1)")
    if not entity.strip():
        raise ValueError("a dialog-info document needs an entity (RFC 4235 §4.1.1)")
    _check_number(version, "version")
    _check_xml_text(entity)
    lines = ['<?xml version="1.0" encoding="UTF-8"?>',
             f'<dialog-info xmlns="{NS_DIALOG_INFO}" version="{version}" state="{state}" '
             f'entity="{_escape(entity)}">']
    for dialog in dialogs:
        lines.extend(_dialog_lines(dialog))
    lines.append("</dialog-info>")
    return ("\n".join(lines) + "\n").encode("utf-8")


def _dialog_lines(dialog: DialogInfoDialog) -> Iterator[str]:
    if not dialog.id.strip():
        raise ValueError("a <dialog> needs an id (RFC 4235 §4.1.2)")
    if dialog.state not in DIALOG_STATES:
        raise ValueError(f"dialog state {dialog.state[:40]!r} is not one of RFC 4235 §3.7.1's")
    if dialog.direction not in (None, "", *_DIRECTIONS):
        raise ValueError(f"direction {dialog.direction!r:.60} is neither 'initiator' nor 'recipient'")
    if dialog.code is not None and not (isinstance(dialog.code, int) and 100 <= dialog.code <= 699):
        raise ValueError(f"state code {dialog.code!r} is not a SIP status code 100-699")
    if dialog.duration is not None:
        _check_number(dialog.duration, "duration")
    for value in (dialog.id, dialog.call_id, dialog.local_tag, dialog.remote_tag, dialog.event,
                  dialog.local_identity, dialog.local_target, dialog.remote_identity, dialog.remote_target):
        _check_xml_text(value)
    attributes = "".join(f' {name}="{_escape(value)}"' for name, value in (
        ("id", dialog.id), ("call-id", dialog.call_id), ("local-tag", dialog.local_tag),
        ("remote-tag", dialog.remote_tag), ("direction", dialog.direction)) if value)
    yield f"  <dialog{attributes}>"
    state_attributes = "".join(f' {name}="{_escape(str(value))}"' for name, value in (
        ("event", dialog.event), ("code", dialog.code)) if value)
    yield f"    <state{state_attributes}>{dialog.state}</state>"
    if dialog.duration is not None:
        yield f"    <duration>{dialog.duration}</duration>"
    for name, identity, target in (("local", dialog.local_identity, dialog.local_target),
                                   ("remote", dialog.remote_identity, dialog.remote_target)):
        if identity or target:
            yield f"    <{name}>"
            if identity:
                yield f"      <identity>{_escape(identity)}</identity>"
            if target:
                yield f'      <target uri="{_escape(target)}"/>'
            yield f"    </{name}>"
    yield "  </dialog>"


class DialogInfoView:
    """One watched entity's dialogs across the NOTIFYs of one subscription (RFC 4235 §4.1): a
    full document replaces what was known, a partial one updates dialogs by id, and versions
    must increase by one after the first. ``version``: the last applied version (None before
    any); ``dialogs``: the dialogs not terminated, by id. Versions count per subscription: use
    a new view for a new subscription."""

    version: int | None
    dialogs: dict[str, DialogInfoDialog]

    def __init__(self) -> None:
        self.version = None
        self.dialogs = {}

    def apply(self, info: DialogInfo) -> bool:
        """Fold ``info`` in; True when applied. False, with nothing changed, when it cannot be:
        a full document whose version is not greater than the last (a repeat or an old one), a
        partial document before any full one or whose version is not exactly the last + 1 —
        then the caller should re-subscribe to get the full state (RFC 4235 §4.1). A terminated
        dialog is removed."""
        if info.state == "full":
            if self.version is not None and info.version <= self.version:
                return False
            self.dialogs = {}
        elif self.version is None or info.version != self.version + 1:
            return False
        for dialog in info.dialogs:
            if dialog.state == "terminated":
                self.dialogs.pop(dialog.id, None)
            else:
                self.dialogs[dialog.id] = dialog
        self.version = info.version
        return True

    @property
    def summary(self) -> str:
        """The lamp a BLF key shows: ``"busy"`` (some dialog confirmed), else ``"ringing"``
        (some dialog trying/proceeding/early with direction ``recipient``), else ``"calling"``
        (trying/proceeding/early as initiator or without a direction), else ``"idle"``."""
        states = [(d.state, d.direction) for d in self.dialogs.values()]
        if any(state == "confirmed" for state, _ in states):
            return "busy"
        if any(state in _RINGING_STATES and direction == "recipient" for state, direction in states):
            return "ringing"
        if any(state in _RINGING_STATES for state, _ in states):
            return "calling"
        return "idle"


# --- XML helpers ----------------------------------------------------------------------------


def _parse_xml(body: bytes, kind: str) -> ET.Element:
    """The root element of ``body``, or :class:`PresenceError` for a body that is too long, not
    UTF-8, declares a DTD or entities, or is not well-formed XML."""
    if len(body) > MAX_BODY_BYTES:
        raise PresenceError(f"a {kind} body of {len(body)} bytes (at most {MAX_BODY_BYTES})")
    try:
        text = bytes(body).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PresenceError(f"the {kind} body is not UTF-8 (byte {exc.start})") from None
    if _FORBIDDEN.search(text):
        raise PresenceError(f"the {kind} body declares a DOCTYPE or an ENTITY (refused)")
    parser = ET.XMLParser()
    try:
        parser.feed(text)  # a str: expat ignores the encoding the XML declaration names
        return parser.close()
    except ET.ParseError as exc:
        raise PresenceError(f"the {kind} body is not well-formed XML: {exc}") from None


def _split(tag: str) -> tuple[str, str]:
    """(namespace, local name) of an ElementTree tag; namespace "" when it has none."""
    if tag.startswith("{"):
        namespace, _, name = tag[1:].partition("}")
        return namespace, name
    return "", tag


def _is(element: ET.Element, name: str, namespaces: frozenset[str]) -> bool:
    namespace, local = _split(element.tag)
    return local == name and namespace in namespaces


def _find(element: ET.Element, name: str, namespaces: frozenset[str]) -> ET.Element | None:
    """The first child called ``name`` in one of ``namespaces``."""
    return next((child for child in element if _is(child, name, namespaces)), None)


def _expect_root(root: ET.Element, name: str, namespaces: frozenset[str], what: str) -> None:
    if not _is(root, name, namespaces):
        namespace, local = _split(root.tag)
        shown = f"<{local[:40]}>" + (f" in namespace {namespace[:80]!r}" if namespace else "")
        raise PresenceError(f"the root element is {shown}, not {what}")


def _text(element: ET.Element) -> str:
    return "".join(element.itertext()).strip()


def _add_text(texts: list[str], element: ET.Element) -> None:
    if text := _text(element):
        texts.append(text)


def _optional_attribute(element: ET.Element, name: str) -> str | None:
    value = element.get(name)
    return (value.strip() or None) if value is not None else None


def _required_attribute(element: ET.Element, name: str, where: str) -> str:
    value = _optional_attribute(element, name)
    if value is None:
        raise PresenceError(f"{where} has no {name} attribute (or an empty one)")
    return value


def _number(text: str, what: str) -> int:
    if not _NUMBER.fullmatch(text):
        raise PresenceError(f"{what} {text[:40]!r} is not a non-negative decimal number")
    return int(text)


def _check_number(value: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 10 ** 40:
        raise ValueError(f"{what} {value!r} is not a non-negative integer (of at most 40 digits)")


def _check_xml_text(value: str | None) -> None:
    if value is not None and (match := _NOT_XML_CHAR.search(value)):
        raise ValueError(f"{value[:40]!r} holds {match.group()!r}, which XML 1.0 cannot carry")


def _escape(text: str) -> str:
    """``text`` for an XML attribute value or element content: markup characters escaped, and
    CR, LF and tab as character references so that the parser's normalisation keeps them."""
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
            .replace("\r", "&#13;").replace("\n", "&#10;").replace("\t", "&#9;"))
