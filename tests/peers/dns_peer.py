"""A real DNS server for tests: dnsmasq in the foreground on 127.0.0.1:<free port>, serving
zone data given as dnsmasq options (``--naptr-record``, ``--srv-host``, ``--host-record``)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode

from peertools import free_port, require
from skinnysip.net.resolver import Resolver


@dataclass
class DnsServer:
    host: str
    port: int
    log: Path

    @property
    def nameservers(self) -> list[tuple[str, int]]:
        return [(self.host, self.port)]

    def log_size(self) -> int:
        return self.log.stat().st_size

    def queries_since(self, offset: int) -> list[str]:
        """dnsmasq's ``query[TYPE] name`` lines logged after byte ``offset``."""
        text = self.log.read_bytes()[offset:].decode(errors="replace")
        return [line.split(": ", 1)[1].split(" from ")[0] for line in text.splitlines() if ": query[" in line]

    def resolver(self, timeout: float = 3.0, **kwargs: object) -> Resolver:
        return Resolver(self.nameservers, timeout=timeout, **kwargs)  # type: ignore[arg-type]


def _answers(host: str, port: int, probe_name: str) -> bool:
    query = dns.message.make_query(probe_name, "A")
    try:
        reply = dns.query.udp(query, host, port=port, timeout=0.2)
    except (OSError, dns.exception.DNSException):
        return False
    return reply.rcode() == dns.rcode.NOERROR and bool(reply.answer)


@contextlib.contextmanager
def dnsmasq_server(options: Sequence[str], probe_name: str, startup_timeout: float = 10.0) -> Iterator[DnsServer]:
    """dnsmasq in the foreground on 127.0.0.1:<free port> serving the zone ``options``;
    ``probe_name`` (which must have an A record) is asked until dnsmasq answers. Always
    stopped."""
    # dnsmasq-base installs /usr/sbin/dnsmasq, which is not on a normal user's PATH.
    binary = shutil.which("dnsmasq") or shutil.which("dnsmasq", path="/usr/sbin:/sbin") or require("dnsmasq")
    workdir = Path(tempfile.mkdtemp(prefix="skinnysip-dns-"))
    last_log = ""
    for attempt in range(3):  # the free port may be taken between probe and bind: retry
        port = free_port(socket.SOCK_DGRAM)
        log = workdir / f"dnsmasq-{attempt}.log"
        args = [
            binary,
            "--keep-in-foreground",
            "--log-facility=-",
            "--log-queries",
            "--no-resolv",
            "--no-hosts",
            "--no-poll",
            "--conf-file=/dev/null",
            "--pid-file=",
            f"--port={port}",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            *options,
        ]
        if os.geteuid() == 0:
            args += ["--user=root", "--group=root"]  # do not drop to "nobody" (may not exist)
        with open(log, "wb") as out:
            proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + startup_timeout
            while time.monotonic() < deadline and proc.poll() is None:
                if _answers("127.0.0.1", port, probe_name):
                    break
                time.sleep(0.05)
            if proc.poll() is not None:
                last_log = log.read_text(errors="replace")
                continue
            if not _answers("127.0.0.1", port, probe_name):
                raise TimeoutError(f"dnsmasq did not answer within {startup_timeout}s:\n{log.read_text()}")
            yield DnsServer("127.0.0.1", port, log)
            return
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
    raise RuntimeError(f"dnsmasq did not start:\n{last_log}")


