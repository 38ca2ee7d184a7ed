"""The floor of a Python REGISTER load generator: the leanest asyncio client, with no SIP stack.

A measuring instrument for ``bench_load_register.py``, not a product: it answers "how fast
can *any* Python program on this interpreter and event loop register against this Kamailio",
so that skinnysip's rate can be read against what Python itself allows, as the parse
benchmark reads the parser against a bare line/colon split.

What it leaves out, on purpose (all of which ``skinnysip load register`` does): parsing and
checking responses (it finds ``Call-ID``, the status code and the ``nonce`` with byte
searches), client transactions (no retransmissions, Timer F is a plain deadline), top-Via
matching, 1xx handling, other challenge shapes (only ``qop=auth`` or none, MD5), counters by
status, percentiles, a live view. It keeps what every such client must do: one UDP socket,
a new Call-ID/tag/branch per attempt, an asyncio task per attempt paced at ``rate``, the
401 → Authorization → 200 exchange (RFC 3261 §22, RFC 2617 digest with qop=auth),
``os.urandom`` for the random parts.

Run: ``python benchmarks/register_floor.py PORT RATE SECONDS REALM USER PASSWORD [LOOP]``
(LOOP: ``asyncio``, the default, or ``uvloop``, the event loop it runs on). Prints one
JSON line: ``attempted``, ``successful``, ``failed``, ``rate`` (achieved, per second), ``cpu``
(this process's user + system seconds). Bounded: ``RATE·SECONDS`` attempts, each waits at
most ``ATTEMPT_TIMEOUT`` seconds.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import resource
import sys

ATTEMPT_TIMEOUT = 5.0  # s an attempt waits for its 200 (as Timer F would, shorter)
NONCE_RE = re.compile(rb'nonce="([^"]*)"')
QOP_AUTH_RE = re.compile(rb'qop="?[^"\r\n]*\bauth\b')


class FloorClient(asyncio.DatagramProtocol):
    """REGISTER → 401 → REGISTER with Authorization → 200, per Call-ID, on one socket."""

    def __init__(self, realm: str, user: str, password: str) -> None:
        self.realm, self.user, self.password = realm, user, password
        self.ha1 = hashlib.md5(f"{user}:{realm}:{password}".encode()).hexdigest()
        self.ha2 = hashlib.md5(f"REGISTER:sip:{realm}".encode()).hexdigest()
        self.waiting: dict[str, asyncio.Future[bool]] = {}
        self.local_port = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # asyncio's UDP transport
        self.local_port = transport.get_extra_info("sockname")[1]

    def request(self, call_id: str, cseq: int, authorization: str = "") -> bytes:
        realm, user, port = self.realm, self.user, self.local_port
        return (f"REGISTER sip:{realm} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{port};rport;branch=z9hG4bK{os.urandom(8).hex()}\r\n"
                f"Max-Forwards: 70\r\nFrom: <sip:{user}@{realm}>;tag={call_id[:10]}\r\nTo: <sip:{user}@{realm}>\r\n"
                f"Call-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:{user}@127.0.0.1:{port}>\r\n"
                f"Expires: 60\r\n{authorization}Content-Length: 0\r\n\r\n").encode()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        start = data.find(b"\r\nCall-ID: ")
        if start < 0 or not data.startswith(b"SIP/2.0 "):
            return
        end = data.find(b"\r\n", start + 11)
        call_id = data[start + 11:end].decode("ascii", "replace")
        waiter = self.waiting.get(call_id)
        if waiter is None or waiter.done():
            return
        status = data[8:11]
        if status == b"401" and b"\r\nCSeq: 1 " in data:
            nonce = NONCE_RE.search(data)
            if nonce is None:
                waiter.set_result(False)
                return
            self._answer(call_id, nonce.group(1).decode("ascii", "replace"), QOP_AUTH_RE.search(data) is not None)
        elif status[:1] == b"2":
            waiter.set_result(True)
        elif status[:1] in b"3456":
            waiter.set_result(False)

    def _answer(self, call_id: str, nonce: str, qop: bool) -> None:
        uri = f"sip:{self.realm}"
        if qop:
            cnonce = os.urandom(8).hex()
            response = hashlib.md5(f"{self.ha1}:{nonce}:00000001:{cnonce}:auth:{self.ha2}".encode()).hexdigest()
            extra = f', cnonce="{cnonce}", qop=auth, nc=00000001'
        else:
            response = hashlib.md5(f"{self.ha1}:{nonce}:{self.ha2}".encode()).hexdigest()
            extra = ""
        authorization = (f'Authorization: Digest username="{self.user}", realm="{self.realm}", nonce="{nonce}", '
                         f'uri="{uri}", response="{response}", algorithm=MD5{extra}\r\n')
        assert self.transport is not None
        self.transport.sendto(self.request(call_id, 2, authorization))

    async def attempt(self) -> bool:
        call_id = os.urandom(16).hex()
        waiter = asyncio.get_running_loop().create_future()
        self.waiting[call_id] = waiter
        try:
            assert self.transport is not None
            self.transport.sendto(self.request(call_id, 1))
            return await asyncio.wait_for(waiter, ATTEMPT_TIMEOUT)
        except TimeoutError:
            return False
        finally:
            del self.waiting[call_id]


async def run(port: int, rate: float, seconds: float, realm: str, user: str, password: str) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    transport, client = await loop.create_datagram_endpoint(
        lambda: FloorClient(realm, user, password), local_addr=("127.0.0.1", 0), remote_addr=("127.0.0.1", port))
    total = max(1, int(rate * seconds))
    results: list[bool] = []
    tasks: set[asyncio.Task[None]] = set()

    async def one() -> None:
        results.append(await client.attempt())

    started = loop.time()
    try:
        for n in range(total):  # paced like SIPp -r: attempt n starts at n / rate
            delay = started + n / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            task = loop.create_task(one())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(set(tasks), timeout=ATTEMPT_TIMEOUT + 1)
    finally:
        transport.close()
    elapsed = loop.time() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    successful = sum(results)
    return {"attempted": total, "successful": successful, "failed": total - successful,
            "rate": round(successful / elapsed, 2) if elapsed > 0 else 0.0, "cpu": usage.ru_utime + usage.ru_stime}


def main() -> int:
    if len(sys.argv) not in (7, 8) or sys.argv[7:] not in ([], ["asyncio"], ["uvloop"]):
        print(__doc__, file=sys.stderr)
        return 2
    port, rate, seconds = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
    # the loop as skinnysip load chooses it (net/event_loop.py: a few ms to import, no SIP stack)
    from skinnysip.net.event_loop import run as run_on

    print(json.dumps(run_on(run(port, rate, seconds, *sys.argv[4:7]), (sys.argv[7:] or ["asyncio"])[0])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
