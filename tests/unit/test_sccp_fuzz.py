"""Property tests: no byte string makes the SCCP decoder raise anything but SCCPDecodeError, and
random field values survive encode -> decode."""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skinnysip.sccp.messages import MESSAGES, FieldDef, FrameDecoder, SCCPDecodeError, decode_frame, encode

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
    # whatever decodes must re-encode and decode to the same fields. A frame that ends before
    # the layout's optional trailing fields (real CMs send shorter forms, e.g. [AST]'s 16-byte
    # CloseReceiveChannel) decodes without them; re-encoding writes the whole layout, so those
    # come back with their zero value and nothing else changes.
    again = decode_frame(encode(msg.id, msg.fields, protocol_version=pv, header_version=msg.header_version),
                         protocol_version=pv)
    assert {k: again.fields.get(k) for k in msg.fields} == msg.fields
    added = {k: v for k, v in again.fields.items() if k not in msg.fields}
    assert all(v in (0, "", b"", "0.0.0.0", "::", None) or _all_zero(v) for v in added.values()), added


def _all_zero(value: object) -> bool:
    if isinstance(value, dict):
        return all(v in (0, "", None) or _all_zero(v) for v in value.values())
    if isinstance(value, list):
        return all(v in (0, "", None) or _all_zero(v) for v in value)
    return isinstance(value, str) and set(value) <= {"0"}


def test_classic_start_media_transmission_read_at_protocol_17() -> None:
    """Found by the property above: the 116-byte classic StartMediaTransmission read with the
    protocol-17 layout decodes the fields present and leaves out the optional tail."""
    frame = encode("StartMediaTransmission", {}, protocol_version=0)
    msg = decode_frame(frame, protocol_version=17)
    again = decode_frame(encode(msg.id, msg.fields, protocol_version=17), protocol_version=17)
    assert {k: again.fields[k] for k in msg.fields} == msg.fields
    assert "RFC2833PayloadType" in again.fields and "RFC2833PayloadType" not in msg.fields


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
