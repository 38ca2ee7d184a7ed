"""``skinnysip lab`` and ``skinnysip serve --lab`` as a user runs them: a bad config and a busy
port give one line and exit status 2 (never a traceback), demo passwords are refused beyond
loopback, and the API shows the running lab (``GET /api/lab``, ``GET /api/lab/calls``)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_phone_baresip import share_of

from peertools import free_port
from skinnysip.phone.api import IncomingCall
from skinnysip.phone.sip_phone import SIPAccount, SIPPhone

pytestmark = [pytest.mark.peer, pytest.mark.timeout(90)]

CLI = [sys.executable, "-m", "skinnysip"]


def run(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


async def lab_info(client: httpx.AsyncClient, proc: subprocess.Popen[str], timeout: float = 30.0) -> httpx.Response:
    """``GET /api/lab`` once ``serve`` answers (bounded: ``timeout`` s, or the process exits)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await client.get("/api/lab")
        except httpx.TransportError:
            assert time.monotonic() < deadline and proc.poll() is None, "serve --lab did not come up"
            await asyncio.sleep(0.2)


def test_bad_config_names_the_key(tmp_path: Path) -> None:
    config = tmp_path / "lab.toml"
    config.write_text('[[users]]\nuser = "1001"\npassword = "secret1"\n\n[[users]]\nuser = "1002"\n')
    assert one_line_error(run("lab", "--config", str(config))) == "error: lab config: users[1].password: missing"
    config.write_text('algorithm = "SHA-1"\n')
    assert "algorithm: 'SHA-1' is not one of MD5, SHA-256" in one_line_error(run("lab", "--config", str(config)))
    config.write_text('[ports]\nsip = "five"\n')
    assert "ports.sip: a port number expected" in one_line_error(run("lab", "--config", str(config)))
    config.write_text("[ports\n")
    assert "not valid TOML" in one_line_error(run("lab", "--config", str(config)))
    config.write_text('hosts = ["127.0.0.1"]\n[ports]\nsip = 0\nsips = 0\nsccp = 0\n[stir]\nsign = true\n')
    assert "stir.x5u: needed to sign" in one_line_error(run("lab", "--config", str(config)))  # no serve, no URL


def test_demo_passwords_stay_on_loopback() -> None:
    line = one_line_error(run("lab", "--host", "0.0.0.0", "--sip-port", "0", "--sips-port", "0", "--sccp-port", "0"))
    assert "users[0].password: the demo password of 1001 may not be used when listening beyond loopback" in line


@pytest.mark.parametrize("kind", ["sip", "sccp"])
def test_busy_port_is_one_line(kind: str) -> None:
    busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if kind == "sip" else socket.SOCK_STREAM)
    busy.bind(("127.0.0.1", 0))
    if kind == "sccp":
        busy.listen()
    taken = busy.getsockname()[1]
    try:
        ports = {"sip": "0", "sips": "0", "sccp": "0", kind: str(taken)}
        line = one_line_error(run("lab", "--host", "127.0.0.1", "--sip-port", ports["sip"], "--sips-port", ports["sips"],
                                  "--sccp-port", ports["sccp"]))
    finally:
        busy.close()
    assert line.startswith(f"error: lab: {kind.upper()}: cannot listen on 127.0.0.1:{taken}/")
    assert line.endswith("address already in use")


async def test_serve_lab_shows_the_lab(tmp_path: Path) -> None:
    """serve --lab (implied by --lab-config; --sip-port/--sips-port/--sccp-port override the
    config): GET /api/lab shows the lab; a phone registered with what it shows calls the
    echo, hears itself, and GET /api/lab/calls has the call's ladder."""
    config = tmp_path / "lab.toml"
    config.write_text('hosts = ["127.0.0.1"]\n[ports]\nsip = 0\nsips = 0\nsccp = 0\n')
    port, sip, sips, sccp = free_port(), free_port(), free_port(), free_port()
    proc = subprocess.Popen([*CLI, "serve", "--port", str(port), "--lab-config", str(config), "--sip-port", str(sip),
                             "--sips-port", str(sips), "--sccp-port", str(sccp)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            response = await lab_info(client, proc)
            assert response.status_code == 200
            body = response.json()
            assert body["enabled"] is True and body["domain"] == "lab.skinnysip"
            assert body["sip"] == {"udp": f"127.0.0.1:{sip}", "tcp": f"127.0.0.1:{sip}", "tls": f"127.0.0.1:{sips}"}
            assert body["sccp"] == f"127.0.0.1:{sccp}"  # the flags win over the config file
            assert {"user": "1001", "password": "demo1001", "aor": "sip:1001@lab.skinnysip"} in body["accounts"]
            assert {"name": "SEP001122334455", "line": "2001"} in body["devices"]
            assert body["extensions"] == {"600": "echo", "601": "tone", "602": "playback", "603": "conference",
                                          "604": "dtmf-echo", "605": "voicemail"}
            calls = await client.get("/api/lab/calls")
            assert calls.status_code == 200 and calls.json() == {"calls": []}
            # a newcomer's first call, with what /api/lab told: register 1001, dial the echo
            account = SIPAccount(aor="sip:1001@lab.skinnysip", password="demo1001", registrar=body["sip"]["udp"],
                                 expires=60, source="tone:440", record_dir=str(tmp_path))
            async with SIPPhone(account) as phone:
                registrations = (await client.get("/api/lab")).json()["registrations"]
                assert [r["user"] for r in registrations] == ["1001"]
                call = await phone.call("600")
                assert await call.wait_connected(15), call.end_reason
                await asyncio.sleep(2)
                await call.hangup()
                report = call.media_report()
            assert report is not None and share_of(Path(report["recordings"]["rx"]), 440.0, skip=0.5) >= 0.8
            listed = (await client.get("/api/lab/calls")).json()["calls"]
            assert [c["to"] for c in listed] == ["sip:600@lab.skinnysip"] and listed[0]["state"] == "ended"
            assert listed[0]["callId"] == call.call_id and listed[0]["from"].startswith("sip:1001@lab.skinnysip")
            summaries = [m["summary"] for m in listed[0]["messages"]]
            assert summaries[:3] == ["INVITE sip:600@lab.skinnysip", "100 Trying", "407 Proxy Authentication Required"]
            assert {"direction", "time", "local", "remote", "transport", "summary", "raw"} <= set(listed[0]["messages"][0])
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    assert "Traceback" not in out
    assert "account 1001 / demo1001" in out


def test_api_without_lab_answers_404() -> None:
    from fastapi.testclient import TestClient

    from skinnysip.api.app import create_app

    with TestClient(create_app()) as client:
        response = client.get("/api/lab")
        assert response.status_code == 404
        assert response.json() == {"success": False, "error": "no lab: start the server with 'skinnysip serve --lab'"}
        assert client.get("/api/lab/calls").status_code == 404


async def test_serve_stir_signs_lab_calls_that_a_phone_verifies(tmp_path: Path) -> None:
    """``serve --stir``: the lab signs the INVITEs of its authenticated users (RFC 8224 §5,
    attest A) with a certificate it serves at /api/lab/stir.pem (no token needed), the x5u of
    its PASSporTs; 1002, verifying by fetching it, sees 1001's call verified; secsipidx agrees."""
    config = tmp_path / "lab.toml"
    config.write_text('hosts = ["127.0.0.1"]\n[ports]\nsip = 0\nsips = 0\nsccp = 0\n')
    port = free_port()
    proc = subprocess.Popen([*CLI, "serve", "--port", str(port), "--lab-config", str(config), "--stir"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            body = (await lab_info(client, proc)).json()
            x5u = f"http://127.0.0.1:{port}/api/lab/stir.pem"
            assert body["stir"] == {"sign": True, "attest": "A", "x5u": x5u}
            cert = await client.get("/api/lab/stir.pem")
            assert cert.status_code == 200 and cert.text.startswith("-----BEGIN CERTIFICATE-----")

            def account(user: str, **kw: Any) -> SIPAccount:
                return SIPAccount(aor=f"sip:{user}@lab.skinnysip", password=f"demo{user}",
                                  registrar=body["sip"]["udp"], expires=60, source="silence", **kw)

            async with SIPPhone(account("1002", auto_answer=0.2, identity_fetch=True,
                                        identity_required=True)) as callee, SIPPhone(account("1001")) as caller:
                call = await caller.call("1002")
                event = await callee.next_event(15)
                while event is not None and not isinstance(event, IncomingCall):
                    event = await callee.next_event(15)
                assert isinstance(event, IncomingCall)
                assert await call.wait_connected(15), call.end_reason
                await call.hangup()
            identity = event.call.summary()["identity"]
            assert identity["verified"] and (identity["attest"], identity["orig"], identity["dest"], identity["x5u"]) \
                == ("A", "1001", ["1002"], x5u), identity
            listed = (await client.get("/api/lab/calls")).json()["calls"]
            relayed = [m["raw"] for m in listed[-1]["messages"] if m["direction"] == "sent"
                       and m["summary"].startswith("INVITE sip:1002")]
            value = next(line.split(":", 1)[1].strip() for line in relayed[0].splitlines()
                         if line.startswith("Identity:"))
            pem = tmp_path / "lab-sti.pem"
            pem.write_bytes(cert.content)
            checked = subprocess.run(["secsipidx", "-check", "-identity", value, "-fpubkey", str(pem),
                                      "-expire", "120"], capture_output=True, text=True, timeout=10)
            assert checked.returncode == 0 and checked.stdout.strip() == "ok", checked
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    assert "Traceback" not in out
    assert f"STIR/SHAKEN: users' calls signed (attest A), certificate at http://127.0.0.1:{port}/api/lab/stir.pem" in out
