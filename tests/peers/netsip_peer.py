"""Net::SIP (CPAN; Debian's ``libnet-sip-perl``) as a peer on 127.0.0.1: a registrar and a
stateless proxy with digest authentication, from a SIP stack written apart from ours and
Kamailio's (``netsip_server.pl`` beside this file).

It behaves unlike Kamailio in ways a server may: it challenges every request, OPTIONS too,
with 401 (also as a proxy, where Kamailio sends 407), puts no tag in the To of its 401s, accepts
a nonce again for as long as it is fresh, and rewrites the Request-URI of a call to the contact
the callee registered. The server prints one line per request (:meth:`NetSIPServer.lines`):
``seen METHOD`` for each request it gets, ``registered USER EXPIRES`` for each REGISTER that
passed authentication, ``refused METHOD URI`` for a request to a user nobody registered, which
it answers 404 itself: its proxy never looks a name up in DNS, so nothing leaves the machine.

Its user agent (``netsip_ua.pl``) is a far-end phone: it answers calls and echoes their RTP
(:func:`netsip_echo`), calls with a µ-law file as its audio and RFC 2833 digits
(:func:`netsip_call`), or registers at a registrar and calls through it (:func:`netsip_lab_call`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from peertools import require, stop_process

SCRIPT = Path(__file__).with_name("netsip_server.pl")
UA_SCRIPT = Path(__file__).with_name("netsip_ua.pl")
DOMAIN = "netsip.test"
USERS = {"alice": "wonderland", "bob": "builder", "carol": "sea-shells"}


@dataclass(frozen=True)
class NetSIPServer:
    """A running Net::SIP registrar/proxy on ``host``:``port`` (UDP) for ``domain``."""

    host: str
    port: int
    domain: str
    out_file: Path
    users: dict[str, str] = field(default_factory=dict)

    def lines(self) -> list[str]:
        """What the server printed so far, a line each (``ready``, ``seen``, ``registered``)."""
        return _lines(self.out_file)

    def seen(self, method: str) -> int:
        """Requests of ``method`` the server got (before authentication)."""
        return self.lines().count(f"seen {method}")

    def registrations(self) -> list[tuple[str, int]]:
        """(user, expires) of each REGISTER that passed digest authentication, in order."""
        out = []
        for line in self.lines():
            if line.startswith("registered "):
                _, user, expires = line.split()
                out.append((user, int(expires)))
        return out


def perl_with_net_sip() -> str:
    """The ``perl`` that has Net::SIP; skips the test (fails it in CI) when there is none."""
    perl = require("perl")
    if subprocess.run([perl, "-MNet::SIP", "-e", "1"], capture_output=True, timeout=30).returncode != 0:
        missing = "Perl's Net::SIP is not installed (libnet-sip-perl; run scripts/install-deps.sh)"
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)
    return perl


@contextlib.contextmanager
def _started(args: list[str], what: str, timeout: float) -> Iterator[tuple[int, Path]]:
    """Run ``args`` (a Net::SIP script) until it prints ``ready PORT``; yields the port and
    the file its output goes to; stopped (SIGTERM, then SIGKILL) at exit."""
    workdir = Path(tempfile.mkdtemp(prefix="skinnysip-netsip-"))
    out_file, err_file = workdir / "stdout.log", workdir / "stderr.log"
    with open(out_file, "wb") as out, open(err_file, "wb") as err:
        proc = subprocess.Popen(args, stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while not (ready := [line for line in _lines(out_file) if line.startswith("ready ")]):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Net::SIP's {what} did not start:\n" + err_file.read_text(errors="replace")[-2000:])
            time.sleep(0.05)
        yield int(ready[0].split()[1]), out_file
    finally:
        stop_process(proc)
        if not os.environ.get("SKINNYSIP_KEEP_PEERS"):
            shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def netsip_echo(host: str = "127.0.0.1", timeout: float = 15.0) -> Iterator[tuple[int, Path]]:
    """Net::SIP's user agent answering every call on UDP ``host``:PORT and echoing its RTP;
    yields (PORT, the file where it prints ``established``/``cleanup`` per call)."""
    with _started([perl_with_net_sip(), str(UA_SCRIPT), "echo", host], "echo", timeout) as started:
        yield started


def netsip_call(uri: str, pcmu: Path, digits: str, seconds: float, host: str = "127.0.0.1",
                timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Net::SIP's user agent calls ``uri`` from ``host``, sends ``pcmu`` (raw 8 kHz µ-law) as
    its audio and ``digits`` as RFC 2833 events after 1 s, hangs up after ``seconds``."""
    return subprocess.run([perl_with_net_sip(), str(UA_SCRIPT), "call", host, uri, str(pcmu), digits,
                           str(seconds)], capture_output=True, text=True, timeout=timeout)


def netsip_lab_call(registrar: str, domain: str, user: str, password: str, extension: str, pcmu: Path,
                    out: Path, seconds: float, host: str = "127.0.0.1",
                    timeout: float = 40.0) -> subprocess.CompletedProcess[str]:
    """Net::SIP's user agent registers ``user``@``domain`` at ``registrar`` (``host:port``,
    digest), calls ``extension`` through it with ``pcmu`` as its audio, writes what it hears to
    ``out`` (raw µ-law), hangs up after ``seconds`` and unregisters."""
    return subprocess.run([perl_with_net_sip(), str(UA_SCRIPT), "lab-call", host, registrar, domain, user, password,
                           extension, str(pcmu), str(out), str(seconds)], capture_output=True, text=True,
                          timeout=timeout)


@contextlib.contextmanager
def netsip_server(host: str = "127.0.0.1", users: dict[str, str] | None = None,
                  timeout: float = 15.0) -> Iterator[NetSIPServer]:
    """Start the server on a free UDP port of ``host``; yields once it printed its port;
    stopped (SIGTERM, then SIGKILL) at exit."""
    users = dict(USERS if users is None else users)
    args = [perl_with_net_sip(), str(SCRIPT), host, DOMAIN, *(f"{u}:{p}" for u, p in users.items())]
    with _started(args, "registrar", timeout) as (port, out_file):
        yield NetSIPServer(host, port, DOMAIN, out_file, users)

def _lines(path: Path) -> list[str]:
    return path.read_text(errors="replace").splitlines() if path.exists() else []
