"""The SIP phone behind a real NAT: Linux masquerading in network namespaces this test makes
(:mod:`netns`), with the lab, a STUN server (coturn) and baresip on the WAN side.

Our phone (the CLI, run in the LAN namespace) registers and calls baresip through the lab.
The NAT lets our packets out; what comes back needs the right address in our SDP:

- with ``--stun``, the SDP gives the address coturn saw our RTP socket at (the router's
  public address), so baresip's tone reaches us through the NAT;
- without it the SDP gives the LAN address, which the WAN cannot reach: we hear nothing —
  the case that shows the first is STUN's doing. Our tone reaches baresip either way.

Nothing leaves the machine: the namespaces have no route to its networks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from baresip_peer import baresip
from test_phone_baresip import share_of
from test_stun_coturn import coturn_command, wait_for_stun

import netns
from netns import LAN_IP, PUBLIC_IP, WAN_IP
from peertools import stop_process

pytestmark = [
    pytest.mark.peer,
    pytest.mark.timeout(150),
    pytest.mark.skipif(netns.unavailable() is not None, reason=str(netns.unavailable())),
    pytest.mark.skipif(shutil.which("turnserver") is None, reason="coturn is installed by scripts/install-deps.sh"),
]

DOMAIN = "skinnysip.test"  # the baresip harness's AOR domain
OUR_TONE, THEIR_TONE = 440.0, 660.0
PASSWORDS = {"1001": "nat-test-1001", "1002": "nat-test-1002"}


@pytest.fixture(scope="module")
def topology() -> Iterator[netns.NatTopology]:
    with netns.nat_topology() as net:
        yield net


def _wait_line(proc: subprocess.Popen[str], needle: str, timeout: float) -> str:
    """``proc``'s output up to a line containing ``needle``; AssertionError after ``timeout``
    s or when the output ends first. A thread reads the pipe on (and drops) after that."""
    assert proc.stdout is not None
    stdout = proc.stdout
    lines: queue.Queue[str] = queue.Queue(maxsize=1000)

    def pump() -> None:
        for line in stdout:
            with contextlib.suppress(queue.Full):
                lines.put_nowait(line)

    threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            if proc.poll() is not None:
                break
            continue
        seen.append(line)
        if needle in line:
            return "".join(seen)
    raise AssertionError(f"no {needle!r} in:\n{''.join(seen)}")


@pytest.fixture(scope="module")
def wan_servers(topology: netns.NatTopology, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The lab (its own passwords: it listens beyond loopback) and coturn on the WAN side."""
    config = tmp_path_factory.mktemp("nat") / "lab.toml"
    users = "".join(f'[[users]]\nuser = "{u}"\npassword = "{p}"\n\n' for u, p in PASSWORDS.items())
    config.write_text(f'domain = "{DOMAIN}"\nhosts = ["{WAN_IP}"]\n\n{users}')
    started: list[subprocess.Popen[str]] = []
    try:
        lab = subprocess.Popen([*netns.ns_exec(topology.wan), sys.executable, "-u", "-m", "skinnysip", "lab", "--config",
                                str(config)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        started.append(lab)
        _wait_line(lab, "extensions", 20)
        stun = subprocess.Popen([*netns.ns_exec(topology.wan), *coturn_command(WAN_IP, 3478, config.parent / "turn.pid")],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        started.append(stun)
        _wait_line(stun, "Total General servers", 20)
        wait_for_stun((WAN_IP, 3478), 10, topology.wan)
        yield
    finally:
        for proc in started:
            stop_process(proc)


@contextlib.asynccontextmanager
async def far_end(topology: netns.NatTopology) -> AsyncIterator[object]:
    async with baresip("1002", PASSWORDS["1002"], f"{WAN_IP}:5060", tone_hz=THEIR_TONE, host=WAN_IP,
                       netns_name=topology.wan) as phone:
        for _ in range(150):  # it may register before the control connection is up: its log says so
            if "registered successfully" in phone.log.read_text(errors="replace"):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"baresip did not register: {phone.log.read_text(errors='replace')[-1500:]}")
        yield phone


async def our_call(topology: netns.NatTopology, record: Path, *extra: str, target: str = "1002") -> tuple[list[dict], str]:
    """Our phone in the LAN calls ``target`` for 4 s: (its JSON events, its stderr)."""
    record.mkdir()
    proc = await asyncio.create_subprocess_exec(
        *netns.ns_exec(topology.lan), sys.executable, "-m", "skinnysip", "phone", f"sip:1001@{DOMAIN}",
        "--registrar", f"{WAN_IP}:5060", "--password", PASSWORDS["1001"], "--call", f"sip:{target}@{DOMAIN}",
        "--duration", "4", "--tone", str(OUR_TONE), "--record", str(record), "--json",
        "--pcap", str(record / "call.pcapng"), *extra,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()[-2000:]
    return [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")], err.decode()


@pytest.mark.usefixtures("wan_servers")
@pytest.mark.parametrize("stun", [True, False], ids=["stun", "no-stun"])
async def test_behind_a_nat_stun_lets_the_far_ends_audio_in(topology: netns.NatTopology, tmp_path: Path,
                                                            stun: bool) -> None:
    async with far_end(topology) as theirs:
        events, stderr = await our_call(topology, tmp_path / "rec", *(["--stun", WAN_IP] if stun else []))
        await theirs.wait_event("CALL_CLOSED", timeout=15)  # type: ignore[attr-defined]
        baresip_heard = share_of(theirs.recordings()["dec"], OUR_TONE, skip=0.5)  # type: ignore[attr-defined]
    assert events and not [e for e in events if e.get("event") == "error"], events
    [rx] = (tmp_path / "rec").glob("*-rx.wav")
    heard = share_of(rx, THEIR_TONE, skip=0.5)
    assert baresip_heard >= 0.85  # the NAT lets our RTP out either way
    # the c= of our offer (tshark reads the call's pcap): the NAT's public side, or the LAN's
    fields = subprocess.run(["tshark", "-r", str(tmp_path / "rec" / "call.pcapng"), "-Y", "sip.Method == INVITE",
                             "-T", "fields", "-e", "sdp.connection_info"], capture_output=True, text=True, timeout=30)
    assert set(fields.stdout.split("\n")) - {""} == {f"IN IP4 {PUBLIC_IP if stun else LAN_IP}"}, fields
    if stun:
        assert heard >= 0.85, (heard, stderr[-1500:])
    else:
        assert heard < 0.05, heard


@pytest.mark.usefixtures("wan_servers")
async def test_the_labs_echo_latches_onto_a_phone_behind_a_nat(topology: netns.NatTopology, tmp_path: Path) -> None:
    """Without STUN our SDP gives the LAN address, which the WAN cannot reach; the lab's echo
    (600) sends to where our RTP comes from (latching, RFC 7362 §4) — the NAT's public side,
    the address our INVITE came from — so we hear ourselves."""
    events, stderr = await our_call(topology, tmp_path / "rec", target="600")
    assert events and not [e for e in events if e.get("event") == "error"], events
    [rx] = (tmp_path / "rec").glob("*-rx.wav")
    assert share_of(rx, OUR_TONE, skip=1.0) >= 0.8, stderr[-1500:]
