"""Sipwise rtpengine (the Debian package ``rtpengine-daemon``) as a media relay on 127.0.0.1, in
user space (no kernel forwarding table), driven by Kamailio's ``rtpengine`` module over its ng
control protocol (bencoded dictionaries over UDP).

Kamailio rewrites each SDP through it (``rtpengine_offer``/``rtpengine_answer``), so the phones
see only rtpengine's address and ports, and every RTP/RTCP packet goes through the relay — the
way most Kamailio deployments carry media (and where SRTP↔RTP bridging, ICE on one side and
codec changes happen)."""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from peertools import free_port, require, stop_process


@dataclass(frozen=True)
class RtpenginePeer:
    """A running rtpengine: ``ng_socket`` as Kamailio's ``rtpengine_sock`` names it
    ("udp:127.0.0.1:PORT"); relayed media uses UDP ports ``port_min``–``port_max``."""

    ng_socket: str
    port_min: int
    port_max: int
    log_file: str

    def relays(self, port: int) -> bool:
        return self.port_min <= port <= self.port_max

    def log(self) -> str:
        return Path(self.log_file).read_text(errors="replace")


def ng_command(host: str, port: int, command: bytes, timeout: float = 1.0) -> bytes | None:
    """Send one ng command (a bencoded dictionary) with a fresh cookie; the reply's dictionary,
    or None when nothing answered within ``timeout`` seconds."""
    cookie = f"{random.getrandbits(32):08x}".encode()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(cookie + b" " + command, (host, port))
        try:
            data, _ = s.recvfrom(65536)
        except OSError:
            return None
    prefix = cookie + b" "
    return data[len(prefix):] if data.startswith(prefix) else None


@contextlib.contextmanager
def rtpengine(host: str = "127.0.0.1", ports: int = 200, timeout: float = 15.0) -> Iterator[RtpenginePeer]:
    """Start rtpengine on ``host`` with a control (ng) port and ``ports`` media ports, all free
    now; yields once it answers an ng ``ping`` with ``pong``; stopped (SIGTERM) at exit."""
    binary = require("rtpengine")
    workdir = Path(tempfile.mkdtemp(prefix="skinnysip-rtpengine-"))
    ng = free_port(socket.SOCK_DGRAM, host)
    first = random.randrange(30000, 50000, 2)
    log_file = workdir / "rtpengine.log"
    # --config-file=none: not Debian's /etc/rtpengine/rtpengine.conf, whose fixed CLI (2224) and
    # HTTP/WebSocket (2225) ports make a second rtpengine (another test module) fail to start
    args = [binary, "--config-file=none", "--foreground", "--log-stderr", "--no-log-timestamps", "--table=-1",
            f"--interface={host}", f"--listen-ng={host}:{ng}", f"--port-min={first}",
            f"--port-max={first + ports - 1}", "--log-level=6", f"--pidfile={workdir / 'rtpengine.pid'}",
            "--num-threads=2", "--timeout=60", "--final-timeout=120", "--delete-delay=0"]
    with open(log_file, "wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while ng_command(host, ng, b"d7:command4:pinge", 0.3) != b"d6:result4:ponge":
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"rtpengine did not start:\n{log_file.read_text(errors='replace')[-2000:]}")
        yield RtpenginePeer(f"udp:{host}:{ng}", first, first + ports - 1, str(log_file))
    finally:
        stop_process(proc)
        shutil.rmtree(workdir, ignore_errors=True)
