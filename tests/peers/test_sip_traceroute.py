"""``skinnysip sip traceroute`` (sipsak ``-T``) along a real path: two Kamailio edge proxies
in a row in front of a Kamailio registrar. With Max-Forwards 0, 1, 2 each element in turn
finds it 0 and answers 483 Too Many Hops itself (RFC 3261 §16.3 step 2: ``maxfwd``'s
``mf_process_maxfwd_header``); with 3 the registrar answers the OPTIONS 200. Each element's
own log counts the OPTIONS that reached it, and each answered under its own To-tag prefix
(Kamailio's stateless replies derive it from the element's sockets).

sipsak 0.9.8's own ``-T`` is not run beside it: on this path it sends Max-Forwards 1 again
after every 483, without end."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from sip_peers import EdgeProxy, KamailioPeer, kamailio, kamailio_edge
from test_api_sip_http import api  # noqa: F401 (the uvicorn-served API, a fixture)

from skinnysip.probes.sip import ProbeRequest, TracerouteResult, traceroute

pytestmark = [pytest.mark.peer, pytest.mark.timeout(120)]


@dataclass
class Path3:
    first: EdgeProxy
    second: EdgeProxy
    registrar: KamailioPeer


@pytest.fixture(scope="module")
def path() -> Iterator[Path3]:
    """edge 1 → edge 2 → registrar, all on 127.0.0.1."""
    with kamailio("MD5") as registrar, kamailio_edge(registrar.udp_port, outbound=False) as second, \
            kamailio_edge(second.udp_port, outbound=False) as first:
        yield Path3(first, second, registrar)


def options_seen(log_file: str, edge: bool) -> int:
    pattern = r"edge: OPTIONS " if edge else r"request OPTIONS "
    return len(re.findall(pattern, Path(log_file).read_text(errors="replace")))


async def settled(counts, expected, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while counts() != expected:
        assert time.monotonic() < deadline, (counts(), expected)
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_each_element_on_the_path_answers_483_in_turn_then_the_registrar_200(path: Path3, transport: str) -> None:
    port = path.first.udp_port if transport == "udp" else path.first.tcp_port
    before = (options_seen(path.first.log_file, True), options_seen(path.second.log_file, True),
              options_seen(path.registrar.log_file, False))
    result = await traceroute(ProbeRequest(host="127.0.0.1", port=port, transport=transport, timeout=5.0))
    assert isinstance(result, TracerouteResult)
    assert result.success and result.reached and result.error is None, result.error
    assert [(h.max_forwards, h.status_code) for h in result.hops] == [(0, 483), (1, 483), (2, 483), (3, 200)]
    assert (result.status_code, result.status_text) == (200, "OK")
    assert all(h.agent and h.agent.startswith("kamailio") and h.rtt is not None for h in result.hops)
    # three different elements made the three 483s
    assert len({h.to_tag.split(".")[0] for h in result.hops[:3] if h.to_tag}) == 3
    # the first edge saw all four, the second three, the registrar two (Max-Forwards 1 and 0 there)
    await settled(lambda: (options_seen(path.first.log_file, True) - before[0],
                           options_seen(path.second.log_file, True) - before[1],
                           options_seen(path.registrar.log_file, False) - before[2]), (4, 3, 2))
    sent = [m for m in result.exchange if m.direction == "sent"]
    assert [re.search(r"Max-Forwards: (\d+)", m.raw).group(1) for m in sent] == ["0", "1", "2", "3"]
    assert len({re.search(r"branch=(\S+)", m.raw).group(1) for m in sent}) == 4  # a transaction each


def test_the_command_line_prints_every_hop_and_exits_by_the_last_answer(path: Path3) -> None:
    base = [sys.executable, "-m", "skinnysip", "sip", "traceroute", f"127.0.0.1:{path.first.udp_port}"]
    proc = subprocess.run([*base, "--json"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    body = json.loads(proc.stdout)
    assert body["reached"] is True and [h["statusCode"] for h in body["hops"]] == [483, 483, 483, 200]
    assert {"maxForwards", "statusCode", "statusText", "agent", "toTag", "contact", "rtt", "error"} <= set(body["hops"][0])
    text = subprocess.run(base, capture_output=True, text=True, timeout=60)
    assert text.returncode == 0 and "Traceback" not in text.stderr
    lines = [line for line in text.stdout.splitlines() if re.match(r"\s+\d+\s+kamailio", line)]
    assert len(lines) == 4 and "483 Too Many Hops" in lines[0] and "200 OK" in lines[3], text.stdout
    # not far enough: the farthest 483 is the answer, exit 1
    short = subprocess.run([*base, "--max-hops", "2", "--json"], capture_output=True, text=True, timeout=60)
    body = json.loads(short.stdout)
    assert short.returncode == 1 and body["reached"] is False and body["statusCode"] == 483
    assert body["error"] == "no answer but 483 within 2 hops (Max-Forwards 0 … 1)"


@contextmanager
def silent_udp() -> Iterator[int]:
    """A UDP port that takes every datagram and answers none (a next hop that is down)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


async def test_a_hop_that_never_answers_ends_the_trace_after_three_silent_steps() -> None:
    with silent_udp() as dead, kamailio_edge(dead, outbound=False) as edge:
        started = time.monotonic()
        result = await traceroute(ProbeRequest(host="127.0.0.1", port=edge.udp_port, timeout=1.0))
        took = time.monotonic() - started
    assert not result.reached and not result.success
    assert [h.status_code for h in result.hops] == [483, None, None, None]
    assert all(h.error and h.error.startswith("no response from 127.0.0.1") for h in result.hops[1:])
    assert result.error.startswith("3 steps in a row got no answer")
    assert result.status_code == 483  # the farthest answer
    assert took < 3 * 1.0 + 2


def test_traceroute_over_http(api, path: Path3) -> None:  # noqa: F811
    r = api.post("/api/sip/traceroute", json={"host": "127.0.0.1", "port": path.first.udp_port, "maxHops": 10})
    body = r.json()
    assert r.status_code == 200 and body["success"] is True and body["reached"] is True, body
    assert [h["maxForwards"] for h in body["hops"]] == [0, 1, 2, 3]
    bad = api.post("/api/sip/traceroute", json={"host": "127.0.0.1", "maxHops": 71})
    assert bad.status_code == 400 and bad.json()["error"].startswith("maxHops:")
