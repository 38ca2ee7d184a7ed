"""A misbehaving SIP server in a few lines: a thread with a raw UDP (or TCP) socket on
127.0.0.1 that answers each request with whatever the test's ``reply`` function returns.

No real program sends a 404 to REGISTER with ``Expires: ²``, a Latin-1 realm or 10,000
garbage datagrams on demand, so tests build the bytes themselves. The thread runs beside the
code under test (which may own the event loop, as the CLI's ``asyncio.run`` does).
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

#: reply(request_bytes, fields) -> datagrams to send back (in order)
Reply = Callable[[bytes, dict[str, str]], list[bytes]]


def fields(request: bytes) -> dict[str, str]:
    """method, Via, From, To, Call-ID, CSeq of a request (as text, Latin-1)."""
    text = request.decode("latin-1")
    head = text.split("\r\n\r\n", 1)[0]
    out = {"method": head.split(" ", 1)[0], "head": head}
    for name in ("Via", "From", "To", "Call-ID", "CSeq", "Authorization", "Contact"):
        m = re.search(rf"^{name}:(.*)$", head, re.M | re.I)
        out[name] = m.group(1).strip() if m else ""
    return out


def response(f: dict[str, str], status: str = "200 OK", *, to_tag: str = ";tag=srv1", extra: str = "",
             cseq: str | None = None, body: bytes = b"", omit: tuple[str, ...] = ()) -> bytes:
    """A response to the request whose ``fields`` are ``f`` (Latin-1 text; ``extra`` is more
    header lines, each ending in CRLF; ``omit`` names header fields to leave out)."""
    lines = [f"SIP/2.0 {status}"]
    for name, value in (("Via", f["Via"]), ("From", f["From"]), ("To", f["To"] + to_tag),
                        ("Call-ID", f["Call-ID"]), ("CSeq", cseq or f["CSeq"])):
        if name not in omit:
            lines.append(f"{name}: {value}")
    head = "\r\n".join(lines) + "\r\n" + extra + f"Content-Length: {len(body)}\r\n\r\n"
    return head.encode("latin-1") + body


@contextmanager
def udp_server(reply: Reply, *, requests: int = 100) -> Iterator[tuple[int, list[bytes]]]:
    """Serve ``reply`` on a UDP socket; yields (port, requests received). At most
    ``requests`` requests are answered; the thread ends with the block."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.1)
    received: list[bytes] = []
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set() and len(received) < requests:
            try:
                data, addr = sock.recvfrom(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            received.append(data)
            for datagram in reply(data, fields(data)):
                try:
                    sock.sendto(datagram, addr)
                except OSError:
                    pass
        # what arrived before the block ended is kept, answered or not (the client's last
        # datagram, e.g. the ACK of a final response, may still wait in the socket)
        sock.setblocking(False)
        while len(received) < requests:
            try:
                received.append(sock.recv(65536))
            except OSError:
                return

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1], received
    finally:
        stop.set()
        thread.join(5)
        sock.close()


@contextmanager
def silent_tcp_server() -> Iterator[int]:
    """A TCP listener that accepts connections and never sends a byte (a TLS handshake to
    it never completes). Yields the port."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.1)
    held: list[socket.socket] = []
    stop = threading.Event()

    def run() -> None:
        deadline = time.monotonic() + 120
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        server.close()
