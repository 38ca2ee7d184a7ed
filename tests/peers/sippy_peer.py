"""The Sippy B2BUA (PyPI ``sippy``, the back-to-back user agent of Sippy Softswitch) as a peer
on 127.0.0.1: a B2BUA in the call path, as a PBX is — each call it takes is a new call with its
own Call-ID, tags and CSeq on the far side, and every in-dialog request (re-INVITE, INFO, BYE)
is re-originated by it, not proxied.

It lives in its own virtualenv (``scripts/install-deps.sh`` makes it:
``/opt/skinnysip-peers/sippy``, or ``$SKINNYSIP_SIPPY``), so its dependencies stay out of
ours. Started with ``--static_route`` (every INVITE goes to one ``host:port``), optional
``--keepalive_ans``/``--keepalive_orig`` (periodic re-INVITEs on a leg), ``--max_credit_time``
(it ends calls after so many seconds) and ``--allowed_pts`` (it filters the offer's payload
types). Its output (:meth:`SippyB2BUA.log`) holds every SIP message it sent and received.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from peertools import free_port, require, stop_process

VENV = Path(os.environ.get("SKINNYSIP_SIPPY", "/opt/skinnysip-peers/sippy"))


@dataclass(frozen=True)
class SippyB2BUA:
    """A running Sippy B2BUA listening on ``host``:``port`` (UDP); ``log_file`` its SIP log."""

    host: str
    port: int
    log_file: Path

    def uri(self, user: str) -> str:
        return f"sip:{user}@{self.host}:{self.port}"

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""


def _answers_options(host: str, port: int) -> bool:
    """True when something at ``host``:``port`` answers an OPTIONS with a SIP response."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        s.settimeout(0.3)
        local = s.getsockname()[1]
        branch = "z9hG4bK" + secrets.token_hex(8)
        s.sendto((f"OPTIONS sip:{host}:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {host}:{local};branch={branch}\r\n"
                  f"From: <sip:probe@{host}>;tag={secrets.token_hex(4)}\r\nTo: <sip:{host}:{port}>\r\n"
                  f"Call-ID: {secrets.token_hex(8)}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
                  "Content-Length: 0\r\n\r\n").encode(), (host, port))
        try:
            data, _ = s.recvfrom(65536)
        except OSError:
            return False
    return data.startswith(b"SIP/2.0 ")


@contextlib.contextmanager
def sippy_b2bua(route: str, *, host: str = "127.0.0.1", options: tuple[str, ...] = (),
                timeout: float = 20.0) -> Iterator[SippyB2BUA]:
    """Start the B2BUA on a free UDP port of ``host`` sending every call to ``route``
    (``host:port``, Sippy's ``--static_route``); ``options``: more ``--name=value`` arguments.
    Yields once it answers an OPTIONS; stopped (SIGTERM, then SIGKILL) at exit."""
    binary = require(str(VENV / "bin" / "b2bua"))
    workdir = Path(tempfile.mkdtemp(prefix="skinnysip-sippy-"))
    port = free_port(socket.SOCK_DGRAM, host)
    log_file = workdir / "stdout.log"  # in the foreground its SIP log goes to stdout
    args = [binary, "--foreground=on", f"--sip_address={host}", f"--sip_port={port}",
            f"--static_route={route}", f"--logfile={workdir / 'b2bua.log'}", f"--pidfile={workdir / 'b2bua.pid'}",
            f"--b2bua_socket={workdir / 'b2bua.sock'}", "--auth_enable=off", "--acct_enable=off",
            "--digest_auth=off", *options]
    with open(log_file, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=workdir, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while not _answers_options(host, port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the Sippy B2BUA did not start:\n"
                                   + log_file.read_text(errors="replace")[-2000:])
        yield SippyB2BUA(host, port, log_file)
    finally:
        stop_process(proc)
        if not os.environ.get("SKINNYSIP_KEEP_PEERS"):
            shutil.rmtree(workdir, ignore_errors=True)
