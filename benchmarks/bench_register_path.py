"""The REGISTER path of ``skinnysip load register`` without the network: CPU and calls per
registration in our own code.

Run: ``python benchmarks/bench_register_path.py [--count N] [--repeats R] [--calls] [--top K]``.

``bench_load_register.py`` measures whole runs against Kamailio, where the kernel, the event
loop and the server's timing move the figures by ±15 % from one run to the next. This one
takes them out, to see what a change to the SIP core does to the part that is ours:

- the load scenario (:class:`skinnysip.load.scenarios.TransactionScenario`, REGISTER with
  digest, as ``load register`` builds it) opens its endpoint towards a silent UDP socket of
  this process on 127.0.0.1; its socket's ``sendto`` is then replaced by a list;
- each attempt is started as the runner starts it (``start``); every datagram it sends is
  answered at once, through the socket's own ``datagram_received``, with what Kamailio 5.6
  answers (a 401 with ``WWW-Authenticate: Digest realm, nonce, qop="auth", algorithm=MD5``
  to a REGISTER without credentials, else a 200 listing the binding) — the text of a real
  exchange, with the request's Via, From, To, Call-ID and CSeq;
- the time is ``time.process_time`` around ``--count`` registrations, best of ``--repeats``,
  with the collector as a load run has it (:func:`skinnysip.net.realtime.tuned`); the cost
  of writing the answers is measured alone and taken off.

``--calls``: instead, every Python and C function call is counted (``sys.setprofile``) over
``--count`` registrations: calls per registration and the ``--top`` most called. Both are
deterministic, so they show a change that the timings' noise would hide.

Prints the figures and writes ``benchmarks/results/register_path.json``. Nothing leaves the
process: the only socket is on 127.0.0.1 and receives nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import platform
import socket
import sys
import time
from pathlib import Path
from typing import Any

from skinnysip.load.scenarios import LoadConfig, TransactionScenario, User
from skinnysip.load.stats import Counters
from skinnysip.net import realtime

REALM = "skinnysip.test"
# Kamailio 5.6.3's answers to a REGISTER (tests/peers' configuration), the fields of the
# request they answer filled in
CHALLENGE = ("SIP/2.0 401 Unauthorized\r\nVia: {via};received=127.0.0.1\r\nFrom: {from_}\r\n"
             "To: {to};tag=4e8888001d63ee3fa851f33e7a03ac18.9a9b78d5\r\nCall-ID: {call_id}\r\nCSeq: {cseq}\r\n"
             'WWW-Authenticate: Digest realm="skinnysip.test", nonce="axVVLGsVVPDDENU6uxNSIsm0Fq{n:06d}", '
             'qop="auth", algorithm=MD5\r\nServer: kamailio (5.6.3 (x86_64/linux))\r\nContent-Length: 0\r\n\r\n')
GRANTED = ("SIP/2.0 200 OK\r\nVia: {via};received=127.0.0.1\r\nFrom: {from_}\r\n"
           "To: {to};tag=4e8888001d63ee3fa851f33e7a03ac18.601c78d5\r\nCall-ID: {call_id}\r\nCSeq: {cseq}\r\n"
           "Contact: {contact};expires=60\r\nServer: kamailio (5.6.3 (x86_64/linux))\r\nContent-Length: 0\r\n\r\n")


def _field(text: str, name: str) -> str:
    start = text.index(f"\r\n{name}: ") + len(name) + 4
    return text[start:text.index("\r\n", start)]


def answer(data: bytes, n: int) -> bytes:
    """What Kamailio answers to the REGISTER ``data`` (the ``n``-th nonce for a challenge)."""
    text = data.decode()
    values = {"via": _field(text, "Via").replace(";rport", ";rport=5060", 1), "from_": _field(text, "From"),
              "to": _field(text, "To"), "call_id": _field(text, "Call-ID"), "cseq": _field(text, "CSeq"), "n": n}
    if "\r\nAuthorization: " in text:
        return GRANTED.format(contact=_field(text, "Contact"), **values).encode()
    return CHALLENGE.format(**values).encode()


async def measure(count: int, repeats: int, calls: bool, top: int) -> dict[str, Any]:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    config = LoadConfig(scenario="register", host="127.0.0.1", port=silent.getsockname()[1], domain=REALM,
                        users=[User("alice", "wonderland")], rate=100, limit=count, count=count, unregister=False)
    config.validate()
    counters = Counters()
    scenario = TransactionScenario(config, lambda: counters)
    await scenario.open()
    sock = next(iter(scenario.ep.transport.udp.values()))
    assert sock.transport is not None
    sent: list[tuple[bytes, tuple[str, int]]] = []
    sock.transport.sendto = lambda data, addr: sent.append((data, addr))  # type: ignore[method-assign]
    ended = [0]  # a count: keeping the attempts would keep their messages alive for the collector

    def end(_attempt: object) -> None:
        ended[0] += 1

    def run(first: int, last: int) -> None:
        for index in range(first, last):
            scenario.start(index, end)
            while sent:
                data, addr = sent.pop()
                sock.datagram_received(answer(data, index), addr)

    out: dict[str, Any] = {"count": count}
    try:
        run(0, 200)  # warm: caches, the first challenge's hash constructor
        done = 200
        with realtime.tuned():
            if calls:
                counted: collections.Counter[str] = collections.Counter()

                def profile(frame: Any, event: str, arg: Any) -> None:
                    if event == "call":
                        code = frame.f_code
                        if code.co_filename != __file__:
                            counted[f"{code.co_filename.rpartition('/src/')[2]}:{code.co_name}"] += 1
                    elif event == "c_call":
                        counted[f"C:{getattr(arg, '__qualname__', arg)}"] += 1

                sys.setprofile(profile)
                try:
                    run(done, done + count)
                finally:
                    sys.setprofile(None)
                # the answers' own helpers (str.index, format…) are C calls made from this
                # file: count them out with one more pass of answer() alone
                alone: collections.Counter[str] = collections.Counter()

                def profile_alone(frame: Any, event: str, arg: Any) -> None:
                    if event == "c_call":
                        alone[f"C:{getattr(arg, '__qualname__', arg)}"] += 1

                pairs = [_sample(False), _sample(True)]
                sys.setprofile(profile_alone)
                for n in range(count):
                    for data in pairs:
                        answer(data, n)
                sys.setprofile(None)
                counted.subtract(alone)
                counted = +counted
                total = sum(counted.values())
                python = sum(v for k, v in counted.items() if not k.startswith("C:"))
                out.update(calls_per_registration=round(total / count, 1),
                           python_calls_per_registration=round(python / count, 1),
                           top=[(name, round(n / count, 2)) for name, n in counted.most_common(top)])
            else:
                best = float("inf")
                for _ in range(repeats):
                    started = time.process_time()
                    run(done, done + count)
                    best = min(best, time.process_time() - started)
                    done += count
                requests = [_sample(False), _sample(True)]
                started = time.process_time()
                for n in range(count):
                    for data in requests:
                        answer(data, n)
                answers = time.process_time() - started
                out.update(us_per_registration=round((best - answers) / count * 1e6, 1),
                           answers_us=round(answers / count * 1e6, 1))
        out["successful"] = counters.successful
    finally:
        await scenario.close()
        silent.close()
    return out


def _sample(authorized: bool) -> bytes:
    auth = 'Authorization: Digest username="alice"\r\n' if authorized else ""
    return (f"REGISTER sip:{REALM} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5555;rport;branch=z9hG4bKabc\r\n"
            f"From: <sip:alice@{REALM}>;tag=1\r\nTo: <sip:alice@{REALM}>\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\n"
            f"Contact: <sip:alice@127.0.0.1:5555>\r\n{auth}Content-Length: 0\r\n\r\n").encode()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=3000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--calls", action="store_true", help="count the calls per registration instead of timing")
    ap.add_argument("--top", type=int, default=40)
    args, _ = ap.parse_known_args()  # run.sh passes every benchmark the same arguments
    try:
        import uvloop

        result = uvloop.run(measure(args.count, args.repeats, args.calls, args.top))
        loop = "uvloop"
    except ImportError:
        result = asyncio.run(measure(args.count, args.repeats, args.calls, args.top))
        loop = "asyncio"
    result.update(loop=loop, python=platform.python_version())
    if args.calls:
        print(f"calls per registration: {result['calls_per_registration']} "
              f"(Python functions {result['python_calls_per_registration']})")
        for name, n in result["top"]:
            print(f"{n:9.2f}  {name}")
    else:
        print(f"our REGISTER path ({loop}, no network): {result['us_per_registration']} µs CPU per registration "
              f"(best of {args.repeats} × {args.count}; writing the answers, {result['answers_us']} µs, taken off)")
    out = Path(__file__).parent / "results" / "register_path.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
