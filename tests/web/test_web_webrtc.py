"""A browser calls our softphone: Chromium's own WebRTC (RTCPeerConnection with its fake
microphone: ICE as the full, controlling agent, DTLS-SRTP, rtcp-mux, Opus or PCMU) and a
browser phone's signalling, SIP over a WebSocket (RFC 7118), written out in
``browser_sip_call.html`` as a SIPp scenario would be. Our phone listens on a WebSocket as an
ICE lite agent (RFC 8445 §2.5) with ``srtp="dtls"``: it answers, Chromium checks and nominates
the pair, the DTLS handshake keys SRTP, and audio goes both ways — proven by listening on both
sides: the page's AnalyserNode hears our 440 Hz, our recording hears Chromium's 1000 Hz; the
digits the page sends with ``RTCDTMFSender`` reach us as RFC 4733 events.

Chromium gathers no ICE candidate on loopback, so the call runs in a network namespace of its
own (``unshare --net``) with loopback and a veth pair whose both ends are inside it: nothing
leaves the namespace (``webrtc_call.py`` is what runs there).

The same page logs in to the lab over its WebSocket port (the 407 answered with SHA-256
digest from WebCrypto, RFC 7616) and calls the echo: zero setup for a browser phone; and it
registers there and is called by our phone.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from webtools import mostly

pytestmark = [pytest.mark.peer, pytest.mark.timeout(180)]

HERE = Path(__file__).parent
NAMESPACE_SETUP = ("ip link set lo up && ip link add v0 type veth peer name v1 && "
                   "ip addr add 10.213.0.1/24 dev v0 && ip link set v0 up && ip link set v1 up")


def browser_calls_us(target: str, codec: str, work: Path) -> dict[str, Any]:
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    assert unshare and ip, "unshare (util-linux) and ip (iproute2) are needed to make the call's namespace"
    paths = ":".join(str(p) for p in (HERE.parent, HERE.parent / "peers", HERE))
    done = subprocess.run(
        [unshare, "--net", "sh", "-c",
         f'{NAMESPACE_SETUP} && PYTHONPATH="{paths}" exec "{sys.executable}" "{HERE / "webrtc_call.py"}" '
         f'"{target}" "{codec}" "{work}"'],
        capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.parametrize("codec", ["any", "PCMU"])
def test_chromium_calls_our_phone_over_websocket_with_webrtc_media(codec: str, tmp_path: Path) -> None:
    result = browser_calls_us("phone", codec, tmp_path)
    assert result["error"] is None, result
    sent = [line.split()[1] for line in result["log"] if line.startswith("->")]
    received = [line.split()[2] for line in result["log"] if line.startswith("<-")]
    assert sent == ["INVITE", "ACK", "BYE"] and received[-2:] == ["200", "200"], result["log"]

    answer = result["answer"]  # ours: what Chromium accepted
    for line in ("a=ice-lite", "a=setup:active", "a=rtcp-mux", "a=fingerprint:sha-256 ", "UDP/TLS/RTP/SAVPF"):
        assert line in answer, answer
    assert ("opus/48000/2" if codec == "any" else "PCMU/8000") in answer, answer

    stats = result["stats"]  # Chromium's getStats(): the pair ICE chose, the DTLS and SRTP it keyed
    assert stats["candidate-pair"]["state"] == "succeeded", stats
    assert stats["transport"]["dtlsState"] == "connected", stats
    assert stats["transport"]["srtpCipher"], stats
    assert stats["inbound-rtp"]["packetsReceived"] > 100 and stats["inbound-rtp"]["packetsLost"] <= 5, stats
    assert mostly(result["readings"], 440.0), result["readings"]  # the page heard our tone

    ours = result["ours"]
    report = ours["report"]
    assert report["ice"]["rtp"]["nominated"] is not None and report["ice"]["rtp"]["refused"] == 0, report["ice"]
    assert report["dtls"]["rtp"]["role"] == "client" and report["dtls"]["rtp"]["error"] is None, report["dtls"]
    assert report["srtp"]["auth_failures"] == 0, report["srtp"]
    heard, sounding = ours["heard"]  # we heard Chromium's microphone (silent while its digits go)
    assert ours["recordings"] == 1 and heard >= 0.95 and sounding >= 0.7, ours
    # the page's RTCDTMFSender digits arrive as RFC 4733 events (telephone-event at the codec's rate)
    assert ours["digits"] == [[d, "rfc4733"] for d in "19*#"], ours["digits"]


def test_chromium_logs_in_to_the_lab_over_websocket_and_hears_the_echo(tmp_path: Path) -> None:
    """The lab with ``ws_port`` and SHA-256 digest: the page's INVITE to 600 is challenged
    (407), sent again with credentials, record-routed to the services (ICE lite, DTLS-SRTP
    answered), and the page hears its own 1000 Hz microphone come back from the echo."""
    result = browser_calls_us("lab", "any", tmp_path)
    assert result["error"] is None, result
    statuses = [line.split()[2] for line in result["log"] if line.startswith("<-")]
    assert "407" in statuses and statuses[-2:] == ["200", "200"], result["log"]
    sent = [line.split()[1] for line in result["log"] if line.startswith("->")]
    assert sent == ["INVITE", "ACK", "INVITE", "ACK", "BYE"], result["log"]
    stats = result["stats"]
    assert stats["transport"]["dtlsState"] == "connected" and stats["transport"]["srtpCipher"], stats
    assert mostly(result["readings"], 1000.0), result["readings"]  # the echo of the page's own microphone
    [call] = [c for c in result["ours"]["calls"] if c["to"].startswith("sip:600@")]
    assert call["from"].startswith("sip:1001@"), call


def test_our_phone_calls_a_browser_registered_at_the_lab(tmp_path: Path) -> None:
    """The other way: the page registers at the lab over its WebSocket (401 answered with
    SHA-256 digest) with a ``.invalid`` Contact; our phone (UDP, ``ice=True, srtp="dtls"``)
    calls it through the lab. Our offer must carry ``a=rtcp-mux`` (Chromium refuses an offer
    without it: "RTCP-MUX is not enabled when it is required"), ICE lite credentials and
    candidates, ``a=setup:actpass``; Chromium answers as the full, controlling agent and the
    DTLS client, so we are the DTLS server; both hear each other and our BYE ends it."""
    result = browser_calls_us("browser", "any", tmp_path)
    assert result["error"] is None, result
    assert [line.split()[1] for line in result["log"][:4]] == ["REGISTER", "SIP/2.0", "REGISTER", "SIP/2.0"]
    assert result["bye"] is True, result["log"]
    offer = result["offer"]
    for line in ("a=rtcp-mux", "a=ice-lite", "a=setup:actpass", "UDP/TLS/RTP/SAVP"):
        assert line in offer, offer
    assert "a=setup:active" in result["answer"] and "a=rtcp-mux" in result["answer"], result["answer"]
    assert result["stats"]["inbound-rtp"]["packetsReceived"] > 100, result["stats"]  # SRTP it could decrypt
    assert mostly(result["readings"], 440.0), result["readings"]
    ours = result["ours"]
    heard, sounding = ours["heard"]
    assert ours["connected"] and heard >= 0.95 and sounding >= 0.7, {k: v for k, v in ours.items() if k != "report"}
    report = ours["report"]
    assert report["dtls"]["rtp"]["role"] == "server" and report["dtls"]["rtp"]["error"] is None, report["dtls"]
    assert set(report["dtls"]) == {"rtp"} and set(report["ice"]) == {"rtp"}, report  # multiplexed: one of each
    assert report["ice"]["rtp"]["nominated"] is not None and report["srtp"]["auth_failures"] == 0, report
