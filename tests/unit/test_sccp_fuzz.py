"""Property tests: no byte string makes the SCCP decoder raise anything but SCCPDecodeError, and
random field values survive encode -> decode."""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skinnysip.sccp.messages import (
    HEADER_SIZE,
    MESSAGES,
    FieldDef,
    FrameDecoder,
    SCCPDecodeError,
    decode_frame,
    encode,
    message_def,
)

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# One valid frame of every message in every layout family (zero/empty fields).
VALID_FRAMES = [(since, encode(d.id, {}, protocol_version=since)) for d in MESSAGES.values() for since in
                d.layout_versions]


def _decode_all(data: bytes, protocol_version: int, chunk: int) -> None:
    dec = FrameDecoder(protocol_version=protocol_version)
    for i in range(0, len(data), chunk):
        try:
            dec.feed(data[i:i + chunk])
        except SCCPDecodeError as exc:
            assert exc.reason
            if exc.fatal:
                return


@SETTINGS
@given(st.binary(max_size=600), st.sampled_from([0, 17, 18]), st.integers(1, 64))
def test_random_bytes_only_raise_decode_error(data, pv, chunk):
    _decode_all(data, pv, chunk)
    try:
        decode_frame(data, protocol_version=pv)
    except SCCPDecodeError as exc:
        assert exc.reason


@SETTINGS
@given(st.sampled_from(VALID_FRAMES), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8),
       st.integers(0, 400), st.sampled_from([0, 17]), st.integers(1, 97))
def test_mutated_valid_frames(frame_info, flips, cut, pv, chunk):
    _since, frame = frame_info
    data = bytearray(frame)
    for pos, value in flips:
        data[pos % len(data)] = value
    data = bytes(data[: max(0, len(data) - cut)]) if cut % 3 == 0 else bytes(data)
    _decode_all(data + frame, pv, chunk)
    try:
        msg = decode_frame(data, protocol_version=pv)
    except SCCPDecodeError:
        return
    # whatever decodes re-encodes to a frame of the same length that decodes to the same fields,
    # byte-exact but for the normalisations decode_frame names (bytes after the NUL of a char[n]
    # field, unused slots of fixed-slot groups): those come back as zeros, a fixed point.
    again = encode(msg.id, msg.fields, protocol_version=pv, header_version=msg.header_version)
    assert len(again) == len(data)
    assert decode_frame(again, protocol_version=pv).fields == msg.fields
    if again != data:
        assert encode(msg.id, msg.fields, protocol_version=pv, header_version=msg.header_version) == again
        assert _only_normalised(msg, data, again, pv)


def _only_normalised(msg, data: bytes, again: bytes, pv: int) -> bool:
    """Every byte that differs is zero in ``again`` and lies where decode_frame says it
    normalises: after a NUL inside a char[n] field, or in an unused slot of a fixed-slot group."""
    layout = message_def(msg.id).layout(pv)
    allowed: set[int] = set()
    pos = HEADER_SIZE
    for f in layout:
        if f.type in ("char",) and f.count is None:
            chunk = data[pos:pos + f.size]
            nul = chunk.find(b"\0")
            if nul >= 0:
                allowed.update(range(pos + nul, pos + f.size))
        elif f.type == "char":
            for k in range(f.count or 0):
                chunk = data[pos + k * f.size:pos + (k + 1) * f.size]
                nul = chunk.find(b"\0")
                if nul >= 0:
                    allowed.update(range(pos + k * f.size + nul, pos + (k + 1) * f.size))
        elif f.type == "group" and f.fixed_slots:
            used = min(msg.fields.get(f.count_field, 0), f.count or 0) if f.count_field else (f.count or 0)
            allowed.update(range(pos + used * f.item_size, pos + f.wire_size))
            for k in range(used):  # char fields inside the used entries
                inner = pos + k * f.item_size
                for g in f.fields:
                    if g.type == "char":
                        chunk = data[inner:inner + g.size]
                        nul = chunk.find(b"\0")
                        if nul >= 0:
                            allowed.update(range(inner + nul, inner + g.size))
                    inner += g.wire_size
        size = f.wire_size
        if not size:
            break  # variable-size fields: no char[n] or fixed slots after them in the table
        pos += size
    diff = {i for i, (a, b) in enumerate(zip(data, again, strict=True)) if a != b}
    return diff <= allowed and all(again[i] == 0 for i in diff)


def _all_zero(value: object) -> bool:
    if isinstance(value, dict):
        return all(v in (0, "", None) or _all_zero(v) for v in value.values())
    if isinstance(value, list):
        return all(v in (0, "", None) or _all_zero(v) for v in value)
    return isinstance(value, str) and set(value) <= {"0"}


def test_classic_start_media_transmission_read_at_protocol_17() -> None:
    """Found by the property above: the 116-byte classic StartMediaTransmission read with the
    protocol-17 layout decodes the fields present, notes where the payload ended (``_short``)
    and encodes back byte-exact (issue 11: the optional tail is not added)."""
    frame = encode("StartMediaTransmission", {}, protocol_version=0)
    msg = decode_frame(frame, protocol_version=17)
    assert "RFC2833PayloadType" not in msg.fields
    assert encode(msg.id, msg.fields, protocol_version=17) == frame
    again = decode_frame(encode(msg.id, msg.fields, protocol_version=17), protocol_version=17)
    assert again.fields == msg.fields


def test_short_form_with_trailing_bytes_re_encodes_byte_exact() -> None:
    """Found by the property above: a classic OpenReceiveChannel (112-byte payload) read with
    the protocol-17 layout stops inside the optional tail and keeps 8 bytes as ``_trailing``;
    encoding those fields must put the trailing bytes right after them, not after a
    completed tail."""
    frame = encode("OpenReceiveChannel", {"passThruPartyId": 7}, protocol_version=0)
    msg = decode_frame(frame, protocol_version=17)
    assert msg.fields["_trailing"] and "sourceIpAddr" not in msg.fields
    assert encode(msg.id, msg.fields, protocol_version=17) == frame


@SETTINGS
@given(st.binary(min_size=0, max_size=300), st.integers(0, 0xFFFF))
def test_any_payload_for_any_id(payload, mid):
    frame = struct.pack("<III", len(payload) + 4, 0, mid) + payload
    for pv in (0, 17):
        try:
            msg = decode_frame(frame, protocol_version=pv)
        except SCCPDecodeError:
            continue
        assert msg.id == mid and msg.raw == frame


def _value_strategy(f: FieldDef) -> st.SearchStrategy:
    if f.type in ("u8", "u16", "u32"):
        return st.integers(0, {"u8": 0xFF, "u16": 0xFFFF, "u32": 0xFFFFFFFF}[f.type])
    if f.type == "i32":
        return st.integers(-(2**31), 2**31 - 1)
    if f.type == "char":
        return st.text(st.characters(min_codepoint=1, max_codepoint=255), max_size=f.size).filter(
            lambda s, n=f.size: len(s.encode("latin-1")) <= n)
    if f.type == "cstr":
        return st.text(st.characters(min_codepoint=1, max_codepoint=255), max_size=30)
    if f.type == "bytes":
        return st.binary(min_size=f.size, max_size=f.size).map(bytes.hex)
    if f.type == "ip4":
        return st.ip_addresses(v=4).map(str)
    if f.type == "ip6":
        return st.ip_addresses(v=6).map(str)
    raise AssertionError(f.type)


@st.composite
def _message_fields(draw):
    mdef = draw(st.sampled_from([d for d in MESSAGES.values() if d.documented]))
    since = draw(st.sampled_from(mdef.layout_versions))
    out: dict = {}
    for f in mdef.layout(since):
        if f.type == "strings":
            for name in f.names:
                out[name] = draw(st.text(st.characters(min_codepoint=1, max_codepoint=255), max_size=40))
        elif f.type == "group":
            n = draw(st.integers(0, min(f.count or 0, 4))) if f.count_field else (f.count or 0)
            entries = []
            for _ in range(n):
                entry = {}
                for g in f.fields:
                    if g.type == "ip16":
                        six = draw(st.booleans())
                        entry[g.ref] = int(six)
                        entry[g.name] = str(draw(st.ip_addresses(v=6 if six else 4)))
                    elif g.name not in entry:
                        entry[g.name] = (draw(st.lists(_value_strategy(g), min_size=g.count, max_size=g.count))
                                         if g.count else draw(_value_strategy(g)))
                entries.append(entry)
            out[f.name] = entries
            if f.count_field:
                out[f.count_field] = n
        elif f.type == "ip16":
            six = draw(st.booleans())
            out[f.ref] = int(six)
            out[f.name] = str(draw(st.ip_addresses(v=6 if six else 4)))
        elif f.type == "rest":
            out[f.name] = draw(st.binary(max_size=40)).hex()
        elif f.name not in out:
            out[f.name] = (draw(st.lists(_value_strategy(f), min_size=f.count, max_size=f.count)) if f.count
                           else draw(_value_strategy(f)))
    return mdef, since, out


@SETTINGS
@given(_message_fields(), st.sampled_from([0, 0x11, 0x16]))
def test_random_values_round_trip(item, header_version):
    mdef, since, fields = item
    frame = encode(mdef.id, fields, protocol_version=since, header_version=header_version)
    msg = decode_frame(frame, protocol_version=since)
    assert msg.header_version == header_version
    assert msg.fields == fields
    assert FrameDecoder(protocol_version=since).feed(frame)[0].fields == fields


@SETTINGS
@given(_message_fields(), st.integers(0, 400), st.binary(max_size=12), st.booleans())
def test_cut_or_extended_frames_re_encode_byte_exact(item, cut, extra, extend):
    """Issue 11: a frame of any message cut short (an [AST]-style short form, an old phone's
    empty OffHook, a V2 message ending inside its strings) or followed by bytes beyond the layout
    decodes to fields that encode back to exactly its bytes (``_short``, ``_trailing``), and
    decode -> encode -> decode is stable."""
    mdef, since, fields = item
    frame = encode(mdef.id, fields, protocol_version=since)
    payload = frame[HEADER_SIZE:]
    payload = payload + extra if extend else payload[:max(0, len(payload) - cut)]
    data = struct.pack("<III", len(payload) + 4, 0, mdef.id) + payload
    try:
        msg = decode_frame(data, protocol_version=since)
    except SCCPDecodeError as exc:
        assert exc.reason.startswith(mdef.name)
        return
    again = encode(msg.id, msg.fields, protocol_version=since)
    assert again == data, msg.fields
    assert decode_frame(again, protocol_version=since).fields == msg.fields
