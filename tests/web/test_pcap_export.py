"""POST /api/pcap without a browser: what tshark reads back from exchanges we build, and the
400s for exchanges that cannot be written (no peer needed, tshark is the judge)."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from webtools import assert_clean_capture, tshark_rows

from skinnysip.api.app import app

OPTIONS = ("OPTIONS sip:bob@[2001:db8::1] SIP/2.0\r\nVia: SIP/2.0/{T} [2001:db8::2]:5070;branch=z9hG4bKx\r\n"
           "From: <sip:alice@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\nCall-ID: c1\r\n"
           "CSeq: {N} OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
OK = ("SIP/2.0 200 OK\r\nVia: SIP/2.0/{T} [2001:db8::2]:5070;branch=z9hG4bKx\r\nFrom: <sip:alice@example.com>;tag=1\r\n"
      "To: <sip:bob@example.com>;tag=2\r\nCall-ID: c1\r\nCSeq: {N} OPTIONS\r\nContent-Length: 0\r\n\r\n")


def message(direction: str, t: float, transport: str, raw: str, local: str = "[2001:db8::2]:5070",
            remote: str = "[2001:db8::1]:5060") -> dict[str, object]:
    return {"direction": direction, "time": t, "local": local, "remote": remote, "transport": transport,
            "summary": raw.split("\r\n")[0], "raw": raw}


def post(exchange: list[dict[str, object]]) -> tuple[int, bytes, dict[str, str]]:
    with TestClient(app) as client:
        resp = client.post("/api/pcap", json={"exchange": exchange, "filename": "x.pcapng"})
    return resp.status_code, resp.content, dict(resp.headers)


def test_ipv6_udp_and_tcp_with_several_messages_per_connection(tmp_path: Path) -> None:
    ex = []
    for n in range(1, 4):
        ex.append(message("sent", 1_800_000_000 + n, "tcp", OPTIONS.format(T="TCP", N=n)))
        ex.append(message("received", 1_800_000_000 + n + 0.01, "tcp", OK.format(T="TCP", N=n)))
    ex.append(message("sent", 1_800_000_010, "udp", OPTIONS.format(T="UDP", N=9)))
    code, body, headers = post(ex)
    assert code == 200 and headers["content-type"] == "application/vnd.tcpdump.pcap"
    assert headers["content-disposition"] == 'attachment; filename="x.pcapng"'
    path = tmp_path / "x.pcapng"
    path.write_bytes(body)
    rows = tshark_rows(path, "frame.time_epoch", "ipv6.src", "ipv6.dst", "tcp.seq", "tcp.ack", "sip.CSeq",
                       "frame.comment")
    assert [r[5] for r in rows] == ["1 OPTIONS", "1 OPTIONS", "2 OPTIONS", "2 OPTIONS", "3 OPTIONS", "3 OPTIONS",
                                    "9 OPTIONS"]
    assert [float(r[0]) for r in rows] == [m["time"] for m in ex]
    assert rows[0][1:3] == ["2001:db8::2", "2001:db8::1"] and rows[1][1:3] == ["2001:db8::1", "2001:db8::2"]
    # relative seq/ack continue across messages in each direction
    sent_len = len(OPTIONS.format(T="TCP", N=1))
    ok_len = len(OK.format(T="TCP", N=1))
    assert [(int(r[3]), int(r[4])) for r in rows[:4]] == [(1, 1), (1, 1 + sent_len), (1 + sent_len, 1 + ok_len),
                                                          (1 + ok_len, 1 + 2 * sent_len)]
    assert rows[0][6] == "OPTIONS sip:bob@[2001:db8::1] SIP/2.0"
    assert_clean_capture(path)


def test_a_sccp_frame_in_hex_over_tcp(tmp_path: Path) -> None:
    keepalive = "0400000000000000" + "00000000"  # length 4, header version 0, KeepAlive (0x0000)
    ack = "0400000000000000" + "00010000"  # KeepAliveAck (0x0100)
    ex = [
        {**message("sent", 1.0, "tcp", "", "10.0.0.2:40000", "10.0.0.1:2000"), "summary": "KeepAlive",
         "raw": keepalive, "decoded": {"id": 0, "name": "KeepAlive", "fields": {}}},
        {**message("received", 1.001, "tcp", "", "10.0.0.2:40000", "10.0.0.1:2000"), "summary": "KeepAliveAck",
         "raw": ack, "decoded": {"id": 256, "name": "KeepAliveAck", "fields": {}}},
    ]
    code, body, _ = post(ex)
    assert code == 200
    path = tmp_path / "k.pcapng"
    path.write_bytes(body)
    assert tshark_rows(path, "skinny.messageId") == [["0"], ["256"]]
    assert_clean_capture(path)


def test_unwritable_exchanges_are_400_naming_the_message_and_field() -> None:
    good = message("sent", 1.0, "udp", OPTIONS.format(T="UDP", N=1))
    cases = {
        "exchange[1].remote: 'sip.example.com' is not an IP address": [good, {**good, "remote": "sip.example.com:5060"}],
        "exchange[0].local: '10.0.0.1' is not host:port": [{**good, "local": "10.0.0.1"}],
        "exchange[0].raw: not hex (an SCCP frame)": [{**good, "decoded": {"id": 0}, "raw": "zz"}],
        "exchange[0].transport: 'sctp' is not udp, tcp, tls, ws or wss": [{**good, "transport": "sctp"}],
        "exchange[0].remote: local and remote are of different IP versions": [{**good, "remote": "10.0.0.1:5060"}],
        # one UDP datagram holds at most 65507 octets over IPv4, 65527 over IPv6 (was a 500)
        "exchange[0].raw: 65508 octets do not fit in one UDP datagram over IPv4 (at most 65507)": [
            {**good, "local": "10.0.0.2:5060", "remote": "10.0.0.1:5060", "raw": "A" * 65508}],
        "exchange[0].raw: 65528 octets do not fit in one UDP datagram over IPv6 (at most 65527)": [
            {**good, "raw": "A" * 65528}],
    }
    for error, exchange in cases.items():
        code, body, _ = post(exchange)
        assert code == 400, error
        assert TestClient(app).post("/api/pcap", json={"exchange": exchange}).json() == {"success": False,
                                                                                         "error": error}
    code, body, _ = post([{**good, "direction": "sideways"}])
    assert code == 400 and b"exchange.0.direction" in body
