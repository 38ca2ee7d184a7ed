"""The phone's STIR/SHAKEN roles on 127.0.0.1, two of our phones (RFC 8224 §5, §6.2): the
caller signs, the callee verifies before it rings — with a certificate file, or fetching the
x5u from a local HTTP server (only when asked to) — and, when an identity is required,
refuses with RFC 8224's codes. Interop with secsipidx and Kamailio's secsipid is in
tests/peers/test_phone_identity.py."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from test_sip_identity import KEY, make_cert, pem

from peertools import free_port
from skinnysip.phone.api import ErrorEvent, IncomingCall, event_to_dict
from skinnysip.phone.sip_phone import SIPAccount, SIPPhone
from skinnysip.sip.identity import IdentitySigner

pytestmark = pytest.mark.timeout(60)

CALLER, CALLEE = "+12155550100", "12155550111"


@pytest.fixture
def creds(tmp_path: Path) -> dict[str, Path]:
    """The signing key and its certificate (valid from a day ago for 30 days: now inside), a
    stranger's certificate."""
    now_cert = make_cert(KEY, days=(-1, 30), at=time.time())
    out = {"key": tmp_path / "key.pem", "cert": tmp_path / "cert.pem", "other": tmp_path / "other.pem"}
    out["key"].write_bytes(KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()))
    out["cert"].write_bytes(pem(now_cert))
    out["other"].write_bytes(pem(make_cert(ec.generate_private_key(ec.SECP256R1()), at=time.time())))
    return out


@contextlib.contextmanager
def cert_site(directory: Path, delay: float = 0.0) -> Iterator[tuple[str, list[str]]]:
    """An HTTP server on 127.0.0.1 serving ``directory`` (each answer ``delay`` s late); yields
    its base URL and the paths asked for."""
    asked: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kw: Any) -> None:
            super().__init__(*args, directory=str(directory), **kw)

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            asked.append(self.path)
            time.sleep(delay)
            super().do_GET()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", asked
    finally:
        server.shutdown()
        server.server_close()


def accounts(callee: dict[str, Any], caller: dict[str, Any]) -> tuple[SIPAccount, SIPAccount, int]:
    port = free_port()
    bob = SIPAccount(aor=f"sip:{CALLEE}@127.0.0.1", register=False, listen_host="127.0.0.1", listen_port=port,
                     auto_answer=0.1, source="silence", **callee)
    alice = SIPAccount(aor=f"sip:{CALLER}@127.0.0.1", register=False, listen_host="127.0.0.1", source="silence",
                       **caller)
    return bob, alice, port


async def first(phone: SIPPhone, kind: type, seconds: float = 5.0, seen: list[Any] | None = None) -> Any:
    """The phone's first event of ``kind`` within ``seconds`` (None); the others go to ``seen``."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        event = await phone.next_event(left)
        if isinstance(event, kind):
            return event
        if event is not None and seen is not None:
            seen.append(event)
    return None


async def place(callee: dict[str, Any], caller: dict[str, Any]) -> tuple[Any, Any, list[Any]]:
    """alice calls bob; (alice's call once it connected or ended, bob's IncomingCall or None,
    bob's error events)."""
    bob_acc, alice_acc, port = accounts(callee, caller)
    async with SIPPhone(bob_acc) as bob, SIPPhone(alice_acc) as alice:
        call = await alice.call(f"sip:{CALLEE}@127.0.0.1:{port}")
        seen: list[Any] = []
        incoming = await first(bob, IncomingCall, 3.0, seen)
        await call.wait_connected(5)
        while (event := await bob.next_event(0.05)) is not None:
            seen.append(event)
        return call, incoming, [e for e in seen if isinstance(e, ErrorEvent)]


async def test_a_signed_call_is_verified_before_it_rings(creds: dict[str, Path]) -> None:
    signing = {"identity_key": str(creds["key"]), "identity_x5u": "https://sti.example.test/cert.pem",
               "identity_attest": "B"}
    call, incoming, _ = await place({"identity_certificate": str(creds["cert"])}, signing)
    assert call.connected is not None and call.invite.headers.get("Date")
    identity = incoming.call.identity
    assert identity.verified and (identity.attest, identity.orig, identity.dest) == ("B", "12155550100", ("12155550111",))
    assert identity.x5u == "https://sti.example.test/cert.pem" and 0 <= identity.age < 5
    assert event_to_dict(incoming)["identity"]["verified"] is True
    assert incoming.call.summary()["identity"]["attest"] == "B"
    assert call.identity is None  # our own call is not verified by us


async def test_a_wrong_certificate_rings_unverified_or_is_refused_when_required(creds: dict[str, Path]) -> None:
    signing = {"identity_key": str(creds["key"]), "identity_x5u": "https://sti.example.test/cert.pem"}
    call, incoming, _ = await place({"identity_certificate": str(creds["other"])}, signing)
    assert call.connected is not None  # only told: nothing is required
    assert incoming.call.identity.code == 438 and "signature" in incoming.call.identity.reason
    [ringing] = [m.raw for m in call.exchange if m.direction == "received" and m.summary.startswith("180")]
    assert 'Reason: STIR;cause=438;text="Invalid Identity Header"' in ringing  # RFC 9410 §3, upstream
    call, incoming, errors = await place({"identity_certificate": str(creds["other"]), "identity_required": True},
                                         signing)
    assert incoming is None and call.connected is None
    assert call.end_reason.startswith("438 Invalid Identity Header")
    [refused] = [m.raw for m in call.exchange if m.direction == "received" and m.summary.startswith("438")]
    assert 'Reason: STIR;cause=438;text="Invalid Identity Header"' in refused and "Warning: 399" in refused
    assert "refused 438" in errors[0].reason and "signature" in errors[0].reason


async def test_without_an_identity_428_when_required(creds: dict[str, Path]) -> None:
    call, incoming, errors = await place({"identity_required": True}, {})
    assert incoming is None and call.end_reason == "428 Use Identity Header"
    assert "no Identity header" in errors[0].reason
    call, incoming, _ = await place({}, {})  # nothing asked, nothing carried: no identity at all
    assert call.connected is not None and incoming.call.identity is None


async def test_a_stale_identity_is_403_stale_date(creds: dict[str, Path]) -> None:
    """An Identity made two minutes ago (given as the INVITE's own header: the phone then
    signs nothing itself) is refused 403 Stale Date (RFC 8224 §6.2.2 step 4)."""
    old = IdentitySigner(KEY, "https://sti.example.test/cert.pem").sign(CALLER, CALLEE, time.time() - 120)
    bob_acc, alice_acc, port = accounts({"identity_certificate": str(creds["cert"]), "identity_required": True}, {})
    async with SIPPhone(bob_acc), SIPPhone(alice_acc) as alice:
        call = await alice.call(f"sip:{CALLEE}@127.0.0.1:{port}", headers=[("Identity", old)])
        assert await call.wait_ended(5)
    assert call.end_reason == "403 Stale Date"
    assert call.invite.headers.get_all("Identity") == [old]


async def test_the_x5u_is_fetched_only_when_asked(creds: dict[str, Path]) -> None:
    with cert_site(creds["cert"].parent) as (site, asked):
        signing = {"identity_key": str(creds["key"]), "identity_x5u": f"{site}/cert.pem"}
        _, incoming, _ = await place({}, signing)
        assert incoming.call.identity.code == 436 and "fetching is off" in incoming.call.identity.reason
        assert asked == []
        _, incoming, _ = await place({"identity_fetch": True}, signing)
        assert incoming.call.identity.verified and asked == ["/cert.pem"]
        missing = {"identity_key": str(creds["key"]), "identity_x5u": f"{site}/nothing.pem"}
        _, incoming, _ = await place({"identity_fetch": True}, missing)
        assert incoming.call.identity.code == 436 and "HTTP 404" in incoming.call.identity.reason


async def test_a_cancel_while_the_certificate_is_fetched_is_487(creds: dict[str, Path]) -> None:
    with cert_site(creds["cert"].parent, delay=1.5) as (site, asked):
        signing = {"identity_key": str(creds["key"]), "identity_x5u": f"{site}/cert.pem"}
        bob_acc, alice_acc, port = accounts({"identity_fetch": True}, signing)
        async with SIPPhone(bob_acc) as bob, SIPPhone(alice_acc) as alice:
            call = await alice.call(f"sip:{CALLEE}@127.0.0.1:{port}")
            await asyncio.sleep(0.6)  # the callee is fetching; its 100 Trying went out at 200 ms
            await call.hangup()
            assert await call.wait_ended(5)
            assert await first(bob, IncomingCall, 2.5) is None  # never rang
            assert bob.calls == []
    assert call.end_reason == "cancelled" and asked == ["/cert.pem"]
    assert [m.summary for m in call.exchange if m.direction == "received"][-1] == "487 Request Terminated"


def test_the_cli_refuses_unusable_identity_settings(creds: dict[str, Path]) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "skinnysip", "phone", "sip:1@127.0.0.1", "--no-register",
                               "--duration", "0", *args], capture_output=True, text=True, timeout=30)

    lonely = run("--identity-key", str(creds["key"]))
    assert lonely.returncode == 2 and "identity_x5u" in lonely.stderr
    not_key = run("--identity-key", str(creds["cert"]), "--identity-x5u", "https://x.test/c.pem")
    assert not_key.returncode == 2 and "--identity-key: not a PEM private key" in not_key.stderr
    attest = run("--identity-key", str(creds["key"]), "--identity-x5u", "https://x.test/c.pem", "--attest", "D")
    assert attest.returncode == 2 and "--attest: 'D' is not one of A, B, C" in attest.stderr
    missing = run("--identity-cert", "/nonexistent.pem")
    assert missing.returncode == 2 and "--identity-cert: cannot read" in missing.stderr
    assert "Traceback" not in lonely.stderr + not_key.stderr + attest.stderr + missing.stderr

    def load(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "skinnysip", "load", *args, "127.0.0.1", "-m", "1", "--quiet",
                               "--to", "sip:b@127.0.0.1"],
                              capture_output=True, text=True, timeout=30)

    options = load("options", "--identity-key", str(creds["key"]), "--identity-x5u", "https://x.test/c.pem")
    assert options.returncode == 2 and "call and user are signed" in options.stderr
    bad_key = load("call", "--identity-key", str(creds["cert"]), "--identity-x5u", "https://x.test/c.pem")
    assert bad_key.returncode == 2 and "not a PEM private key" in bad_key.stderr and "(--identity-key" in bad_key.stderr
    gone = load("call", "--identity-key", "/nonexistent.pem", "--identity-x5u", "https://x.test/c.pem")
    assert gone.returncode == 2 and "--identity-key: cannot read" in gone.stderr
    for args, said in ((("--identity-key", str(creds["key"])), "go together"),
                       (("--identity-key", str(creds["cert"]), "--identity-x5u", "https://x.test/c.pem"),
                        "--identity-key: not a PEM private key"),
                       (("--identity-key", "/nonexistent.pem", "--identity-x5u", "https://x.test/c.pem"),
                        "--identity-key: cannot read")):
        probe = subprocess.run([sys.executable, "-m", "skinnysip", "sip", "invite", "127.0.0.1", *args],
                               capture_output=True, text=True, timeout=30)
        assert probe.returncode == 2 and said in probe.stderr and "Traceback" not in probe.stderr, probe.stderr


async def test_an_invite_being_verified_holds_a_call_slot(creds: dict[str, Path]) -> None:
    """With ``max_calls`` 1, a second INVITE while the first one's certificate is fetched is
    refused 486: verifications are bounded as calls are."""
    with cert_site(creds["cert"].parent, delay=1.0) as (site, asked):
        signing = {"identity_key": str(creds["key"]), "identity_x5u": f"{site}/cert.pem"}
        bob_acc, alice_acc, port = accounts({"identity_fetch": True, "max_calls": 1}, signing)
        async with SIPPhone(bob_acc), SIPPhone(alice_acc) as alice:
            first_call = await alice.call(f"sip:{CALLEE}@127.0.0.1:{port}")
            await asyncio.sleep(0.3)
            second = await alice.call(f"sip:{CALLEE}@127.0.0.1:{port}")
            assert await second.wait_ended(5)
            assert await first_call.wait_connected(5)
    assert second.end_reason == "486 Busy Here" and asked == ["/cert.pem"]
