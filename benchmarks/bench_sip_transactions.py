"""The sans-IO transaction layer alone: transactions per second vs the bare parse + serialize.

Run: ``python benchmarks/bench_sip_transactions.py [--count N] [--interval S]``.

No sockets: each case runs N OPTIONS transactions through one
:class:`skinnysip.sip.transactions.TransactionLayer` on a fake clock that advances
``--interval`` seconds per transaction (default 1 ms, i.e. as if 1000 transactions/s
arrived), calling ``tick`` whenever the layer's deadline has passed, as the pump does. So
on UDP the finished transactions stay alive for their Timer K (client, T4 = 5 s) or J
(server, 64·T1 = 32 s) and the timer heap is really used; on TCP they end at once.

- ``client``: ``send_request`` (the request serialized with ``to_bytes``, as the transport
  would) → the 200 parsed from bytes (``parse_message``) → ``receive`` → the final
  :class:`ResponseReceived` event.
  Bare: ``to_bytes`` of the same request + ``parse_message`` of the same 200.
- ``server``: ``parse_message`` of the request bytes + ``stamp_received`` → ``receive`` →
  :class:`RequestReceived` → ``build_response`` (200) → ``send_response`` → ``to_bytes``.
  Bare: the same parse, stamp, ``build_response`` and ``to_bytes`` without the layer.

The requests (each with its own branch, Call-ID and From tag) and the 200s' bytes are
built before the clock starts. Each case is the best of ``--repeats`` runs, a new layer
each run. "overhead" is bare rate / layer rate (how many times slower the layer path is;
1.0 = free). Prints a table and writes ``benchmarks/results/sip_transactions.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

from skinnysip.sip.message import Request, Response, parse_message
from skinnysip.sip.request import build_response, new_branch, new_request
from skinnysip.sip.transaction import Flow
from skinnysip.sip.transactions import RequestReceived, ResponseReceived, TransactionLayer, stamp_received
from skinnysip.sip.uri import NameAddr

ROOT = Path(__file__).resolve().parents[1]
US = ("127.0.0.1", 5070)
PEER = ("127.0.0.1", 5060)
TO_TAG = "as7d2f1e0b"


def _requests(count: int, transport: str) -> list[Request]:
    """OPTIONS requests as a UAC sends them (SIPp's OPTIONS: Via, Max-Forwards, From, To,
    Call-ID, CSeq, Contact, Accept)."""
    out = []
    for i in range(count):
        out.append(new_request(
            "OPTIONS", f"sip:{PEER[0]}:{PEER[1]}",
            from_=NameAddr.parse(f"<sip:bench@{US[0]}:{US[1]}>;tag=f{i:08d}"),
            to=NameAddr.parse(f"<sip:{PEER[0]}:{PEER[1]}>"),
            via=f"SIP/2.0/{transport.upper()} {US[0]}:{US[1]};branch={new_branch()}",
            call_id=f"{i:08d}-bench@{US[0]}",
            contact=NameAddr.parse(f"<sip:bench@{US[0]}:{US[1]}>"),
            headers=[("Accept", "application/sdp")],
        ))
    return out


def _ok(request: Request) -> Response:
    return build_response(request, 200, to_tag=TO_TAG, headers=[
        ("Allow", "INVITE, ACK, CANCEL, OPTIONS, BYE"), ("Accept", "application/sdp")])


# ------------------------------------------------------------------------- client side


def client_bare(requests: list[Request], responses: list[bytes], transport: str, interval: float) -> int:
    for request, data in zip(requests, responses, strict=True):
        request.to_bytes()
        parse_message(data)
    return len(requests)


def client_layer(requests: list[Request], responses: list[bytes], transport: str, interval: float) -> int:
    layer = TransactionLayer()
    flow = Flow(transport, PEER, connection=1 if transport != "udp" else None)
    now = 0.0
    deadline: float | None = None
    finals = 0
    for request, data in zip(requests, responses, strict=True):
        now += interval
        if deadline is not None and deadline <= now:
            deadline = layer.tick(now).deadline
        _tx, out = layer.send_request(request, flow, now)
        for send in out.send:
            send.message.to_bytes()
        out = layer.receive(parse_message(data), flow, now)
        deadline = out.deadline
        for event in out.events:
            if isinstance(event, ResponseReceived) and event.final:
                finals += 1
    if finals != len(requests):
        raise RuntimeError(f"client: {finals} final responses for {len(requests)} transactions")
    return len(layer)


# ------------------------------------------------------------------------- server side


def server_bare(requests: list[bytes], _unused: list[bytes], transport: str, interval: float) -> int:
    for data in requests:
        request = parse_message(data)
        assert isinstance(request, Request)
        stamp_received(request, US)
        _ok(request).to_bytes()
    return 0


def server_layer(requests: list[bytes], _unused: list[bytes], transport: str, interval: float) -> int:
    layer = TransactionLayer()
    flow = Flow(transport, US, connection=1 if transport != "udp" else None)
    now = 0.0
    deadline: float | None = None
    answered = 0
    for data in requests:
        now += interval
        if deadline is not None and deadline <= now:
            deadline = layer.tick(now).deadline
        request = parse_message(data)
        assert isinstance(request, Request)
        stamp_received(request, US)
        out = layer.receive(request, flow, now)
        for event in out.events:
            if isinstance(event, RequestReceived):
                out = layer.send_response(event.transaction, _ok(event.request), now)
                for send in out.send:
                    send.message.to_bytes()
                answered += 1
        deadline = out.deadline
    if answered != len(requests):
        raise RuntimeError(f"server: {answered} requests answered of {len(requests)}")
    return len(layer)


def _best(fn: Callable[..., int], args: tuple[object, ...], repeats: int) -> tuple[float, int]:
    best, live = float("inf"), 0
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        live = fn(*args)
        best = min(best, time.perf_counter() - start)
    return best, live


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=20000, help="transactions per run (default 20000)")
    ap.add_argument("--repeats", type=int, default=5, help="runs per case, best kept (default 5)")
    ap.add_argument("--interval", type=float, default=0.001,
                    help="fake-clock seconds between transactions (default 0.001)")
    args = ap.parse_args()
    if not 1 <= args.count <= 1_000_000 or not 1 <= args.repeats <= 50 or not 0 < args.interval <= 10:
        ap.error("count 1-1000000, repeats 1-50, interval 0-10 s")
    rows = []
    for transport in ("udp", "tcp"):
        requests = _requests(args.count, transport)
        responses = [_ok(r).to_bytes() for r in requests]
        request_bytes = [r.to_bytes() for r in requests]
        cases = {
            "client": (client_bare, client_layer, (requests, responses, transport, args.interval)),
            "server": (server_bare, server_layer, (request_bytes, [], transport, args.interval)),
        }
        for side, (bare, layered, fargs) in cases.items():
            t_bare, _ = _best(bare, fargs, args.repeats)
            t_layer, live = _best(layered, fargs, args.repeats)
            rows.append({
                "case": f"{side} non-INVITE, {transport} ({'reliable' if transport != 'udp' else 'unreliable'})",
                "side": side, "transport": transport, "transactions": args.count,
                "bare_per_s": args.count / t_bare, "layer_per_s": args.count / t_layer,
                "overhead": t_layer / t_bare, "live_transactions_at_end": live,
            })
    print(f"{'case':36} {'parse+serialize/s':>18} {'through layer/s':>16} {'overhead':>9} {'live tx':>8}")
    for r in rows:
        print(f"{r['case']:36} {r['bare_per_s']:18,.0f} {r['layer_per_s']:16,.0f} {r['overhead']:8.2f}x "
              f"{r['live_transactions_at_end']:8}")
    print(f"(overhead = bare rate / layer rate; fake clock {args.interval * 1000:g} ms per transaction, "
          "so UDP transactions linger for Timer K / J)")
    out = ROOT / "benchmarks" / "results" / "sip_transactions.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "benchmark": "sans-IO transaction layer: OPTIONS transactions/s vs bare parse + serialize",
        "count": args.count, "repeats": args.repeats, "interval_s": args.interval,
        "python": platform.python_version(), "machine": platform.machine(), "rows": rows,
    }, indent=2) + "\n")
    print(f"written {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
