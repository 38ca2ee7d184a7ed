"""Helpers for peer tests: free ports, waiting for listeners, running a program with a deadline,
a lossy UDP relay, tshark captures on loopback.

Every helper has a deadline; every process started here is stopped by its context manager.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest


def free_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    """A port currently free for both TCP and UDP on ``host`` (best effort)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, kind) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        other = socket.SOCK_DGRAM if kind == socket.SOCK_STREAM else socket.SOCK_STREAM
        try:
            with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, other) as s2:
                s2.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port found")


@contextlib.contextmanager
def silent_udp() -> Iterator[socket.socket]:
    """A UDP socket bound on 127.0.0.1 that nobody reads: a server that answers nothing (and,
    being bound, draws no ICMP port unreachable either). Closed on exit."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind(("127.0.0.1", 0))
        yield sock
    finally:
        sock.close()


def free_even_range(pairs: int) -> tuple[int, int]:
    """(first, last): an even first port and ``pairs`` UDP port pairs after it on 127.0.0.1,
    all free now (bound and let go), for ``rtp_ports`` ranges."""
    for _ in range(200):
        first = random.randrange(20000, 60000 - 2 * pairs, 2)
        socks: list[socket.socket] = []
        try:
            for port in range(first, first + 2 * pairs):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return first, first + 2 * pairs - 1
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range")


class ExitedError(RuntimeError):
    """The process that should have started listening exited first."""


def wait_tcp(host: str, port: int, timeout: float = 10.0, proc: subprocess.Popen[Any] | None = None) -> None:
    """Block until something accepts TCP connections on host:port, or raise TimeoutError;
    with ``proc``, raise :class:`ExitedError` as soon as that process has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ExitedError(f"the process exited ({proc.returncode}) before listening on {host}:{port}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def stop_process(proc: subprocess.Popen[Any], grace: float = 5.0) -> None:
    """SIGTERM ``proc``, and SIGKILL it when it has not ended ``grace`` s later."""
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(grace)


def require(program: str) -> str:
    """Path of ``program``; skip the test (clearly) if the install step did not provide it."""
    path = shutil.which(program)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{program} is not installed; scripts/install-deps.sh should have installed it")
        pytest.skip(f"{program} not installed (run scripts/install-deps.sh)")
    return path


async def collect_events(phone: Any, kind: type, until: Callable[[list[Any]], bool], timeout: float) -> list[Any]:
    """A phone's events of ``kind`` (in order) until ``until(found)`` holds or ``timeout`` s
    pass; every event read, of any kind, is also kept in ``phone.seen``."""
    found: list[Any] = []
    seen = phone.__dict__.setdefault("seen", [])
    deadline = time.monotonic() + timeout
    while not until(found) and time.monotonic() < deadline:
        event = await phone.next_event(0.1)
        if event is not None:
            seen.append(event)
        if isinstance(event, kind):
            found.append(event)
    return found


async def run_program(args: list[str], timeout: float = 20.0, cwd: str | Path | None = None) -> tuple[int, str]:
    """Run ``args`` to its end (killed after ``timeout`` seconds) without blocking the event
    loop; returns (exit code, stdout and stderr as text)."""
    proc = await asyncio.create_subprocess_exec(*args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL, cwd=cwd)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


class UDPRelay:
    """A UDP relay on 127.0.0.1 between one client and ``upstream`` (IP, port), in the event
    loop. ``drop_up(data)`` / ``drop_down(data)`` say whether a datagram from the client /
    from the upstream is dropped; ``up``/``down`` keep what was forwarded, ``dropped_up``/
    ``dropped_down`` what was not. Bounded: at most ``limit`` datagrams forwarded each way.
    Use ``port = await relay.start()`` … ``relay.close()``."""

    def __init__(self, upstream: tuple[str, int], *, drop_up: Callable[[bytes], bool] | None = None,
                 drop_down: Callable[[bytes], bool] | None = None, limit: int = 1000) -> None:
        self.upstream = upstream
        self.drop_up = drop_up or (lambda data: False)
        self.drop_down = drop_down or (lambda data: False)
        self.limit = limit
        self.up: list[bytes] = []
        self.down: list[bytes] = []
        self.dropped_up: list[bytes] = []
        self.dropped_down: list[bytes] = []
        self.client: tuple[str, int] | None = None
        self.front: asyncio.DatagramTransport | None = None
        self.back: asyncio.DatagramTransport | None = None

    def _from_client(self, data: bytes, addr: tuple[str, int]) -> None:
        self.client = addr
        if self.drop_up(data):
            self.dropped_up.append(data)
        elif len(self.up) < self.limit and self.back is not None:
            self.up.append(data)
            self.back.sendto(data)

    def _from_upstream(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.client is None or self.front is None:
            return
        if self.drop_down(data):
            self.dropped_down.append(data)
        elif len(self.down) < self.limit:
            self.down.append(data)
            self.front.sendto(data, self.client)

    async def start(self) -> int:
        """Bind the client-facing socket on a free port (returned) and connect upstream."""
        loop = asyncio.get_running_loop()
        relay = self

        class Side(asyncio.DatagramProtocol):
            def __init__(self, receive: Callable[[bytes, tuple[str, int]], None]) -> None:
                self.receive = receive

            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                self.receive(data, addr)

        self.front, _ = await loop.create_datagram_endpoint(lambda: Side(relay._from_client),
                                                            local_addr=("127.0.0.1", 0))
        self.back, _ = await loop.create_datagram_endpoint(lambda: Side(relay._from_upstream),
                                                           remote_addr=self.upstream)
        return int(self.front.get_extra_info("sockname")[1])

    def close(self) -> None:
        for t in (self.front, self.back):
            if t is not None:
                t.close()


class TsharkCapture:
    """A running ``tshark -i lo -f FILTER -w FILE``; ``stop()`` ends it and keeps the file.

    ``decode(display_filter, fields)`` returns one dict per packet (field name → list of
    values as tshark prints them), using tshark's own dissectors as the judge.
    """

    def __init__(self, capture_filter: str, decode_as: list[str] | None = None) -> None:
        self.tshark = require("tshark")
        self.dir = tempfile.mkdtemp(prefix="skinnysip-cap-")
        self.file = Path(self.dir) / "capture.pcapng"
        self.capture_filter = capture_filter
        self.decode_as = decode_as or []
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> TsharkCapture:
        self.proc = subprocess.Popen(
            [self.tshark, "-i", "lo", "-f", self.capture_filter, "-w", str(self.file), "-q"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        assert self.proc.stderr is not None
        os.set_blocking(self.proc.stderr.fileno(), False)
        seen = b""
        while time.monotonic() < deadline:
            chunk = self.proc.stderr.read() or b""
            seen += chunk
            if b"Capturing on" in seen:
                time.sleep(0.3)  # the capture is armed once dumpcap says so; give it a beat
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"tshark exited: {seen.decode(errors='replace')}")
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"tshark did not start capturing: {seen.decode(errors='replace')}")

    def stop(self) -> None:
        if self.proc is None:
            return
        time.sleep(0.5)  # let the last packets reach the ring buffer
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    def decode(self, display_filter: str, fields: list[str], timeout: float = 60.0) -> list[dict[str, Any]]:
        args = [self.tshark, "-r", str(self.file), "-T", "json"]
        for d in self.decode_as:
            args += ["-d", d]
        if display_filter:
            args += ["-Y", display_filter]
        for f in fields:
            args += ["-e", f]
        out = subprocess.run(args, capture_output=True, timeout=timeout, check=True).stdout
        packets = json.loads(out or b"[]")
        return [p.get("_source", {}).get("layers", {}) for p in packets]

    def __enter__(self) -> TsharkCapture:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def tshark_capture(capture_filter: str, decode_as: list[str] | None = None) -> Iterator[TsharkCapture]:
    cap = TsharkCapture(capture_filter, decode_as)
    cap.start()
    try:
        yield cap
    finally:
        cap.stop()


def free_even_port_run(count: int, host: str = "127.0.0.1") -> int:
    """An even UDP port whose next ``count - 1`` ports are free too (a phone's RTP/RTCP pairs),
    best effort."""
    for _ in range(100):
        port = free_port(socket.SOCK_DGRAM, host)
        port -= port % 2
        socks = []
        try:
            for offset in range(count):
                s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind((host, port + offset))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        return port
    raise RuntimeError(f"no run of {count} free UDP ports found")


class ConsolePeer:
    """A peer program driven on its stdin, its stdout kept line by line (linphonec,
    twinkle-console). A subclass has ``proc`` (an asyncio subprocess with stdin and stdout
    piped), ``lines`` (a list) and ``_task``; ``PROMPT`` is stripped from each line, ``NAME``
    and ``WAIT`` (seconds) name the program and bound :meth:`wait_line`."""

    PROMPT = ""
    NAME = "peer"
    WAIT = 15.0
    proc: asyncio.subprocess.Process
    lines: list[str]
    _task: asyncio.Task[None] | None

    def start_reading(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while True:
            try:
                raw = await self.proc.stdout.readline()
            except (ValueError, OSError):  # a line over the limit, or the pipe broke
                return
            if not raw:
                return
            line = raw.decode(errors="replace").replace(self.PROMPT, "").strip()
            if line:
                self.lines.append(line)

    async def command(self, text: str) -> None:
        """Write one command line on the program's stdin."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode() + b"\n")
        await self.proc.stdin.drain()

    async def wait_line(self, pattern: str, timeout: float | None = None, after: int = 0) -> re.Match[str]:
        """The first stdout line at index ≥ ``after`` matching the regex ``pattern``, within
        ``timeout`` seconds (default :attr:`WAIT`); ``AssertionError`` with the last lines."""
        timeout = self.WAIT if timeout is None else timeout
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while time.monotonic() < deadline:
            for line in self.lines[after:]:
                match = regex.search(line)
                if match:
                    return match
            if self.proc.returncode is not None:
                break
            await asyncio.sleep(0.05)
        raise AssertionError(f"{self.NAME}: no line matching {pattern!r} within {timeout} s; "
                             f"stdout was {self.lines[-20:]}")

    async def stop(self, commands: tuple[str, ...], workdir: Path) -> None:
        """Send ``commands`` (its way to quit), wait 5 s for the exit, else kill its process
        group; close stdin, stop reading; remove ``workdir`` unless ``$SKINNYSIP_KEEP_PEERS``."""
        with contextlib.suppress(Exception):
            for text in commands:
                await self.command(text)
        try:
            await asyncio.wait_for(self.proc.wait(), 5)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            await asyncio.wait_for(self.proc.wait(), 5)
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if not os.environ.get("SKINNYSIP_KEEP_PEERS"):
            shutil.rmtree(workdir, ignore_errors=True)


GAP_ALLOWANCE = 0.1


def longest_silence(freqs: Any) -> tuple[int, int, int, int]:
    """Where the longest silence between sounding 20 ms frames is in ``freqs`` (one dominant
    frequency per frame, 0.0 for a silent one, as
    :func:`skinnysip.rtp.audio.dominant_frequencies` gives): (first sounding frame, first
    frame of the silence, first sounding frame after it, last sounding frame). Leading and
    trailing silence do not count; a recording with fewer than two sounding frames raises
    ``AssertionError``."""
    import numpy as np

    sounding = np.nonzero(freqs)[0]
    assert len(sounding) >= 2, "the recording is (almost) silent"
    k = int(np.argmax(np.diff(sounding)))
    return int(sounding[0]), int(sounding[k]) + 1, int(sounding[k + 1]), int(sounding[-1])


def tone_share(freqs: Any, freq: float, gaps: float = GAP_ALLOWANCE, tolerance: float = 25.0) -> float:
    """The share of frames whose dominant frequency (``freqs``: one per 20 ms frame, 0.0 for a
    silent frame, as :func:`skinnysip.rtp.audio.dominant_frequencies` gives) is ``freq`` ±
    ``tolerance`` Hz.

    Silent frames up to ``gaps`` of all frames are left out of the count: a recording is what
    was played out, and a jitter buffer that runs dry while the machine is starved (three test
    workers and their peers on two cores) plays silence for a moment. Beyond that allowance
    silent frames count as misses; a frame at any other frequency is always a miss, so one-way,
    wrong or garbled audio still fails."""
    import numpy as np

    freqs = np.asarray(freqs)
    if not len(freqs):
        return 0.0
    hits = float(np.sum(np.abs(freqs - freq) < tolerance))
    sounding = float(np.sum(freqs > 0))
    return hits / max(sounding, (1.0 - gaps) * len(freqs))


def distinct(messages: list[Any]) -> list[Any]:
    """``messages`` without UDP retransmissions (of a request, or of a response to one): the
    first of each (first line, top Via branch, CSeq) — a starved machine may retransmit, and a
    stateless Kamailio answers each copy."""
    seen: set[tuple[str, ...]] = set()
    out = []
    for m in messages:
        text = m.raw.decode(errors="replace") if isinstance(m.raw, bytes) else m.raw
        branch = re.search(r"(?im)^Via:[^\r\n]*?;branch=([^;,\s]+)", text)
        cseq = re.search(r"(?im)^CSeq: *([^\r\n]*)", text)
        key = (m.direction, text.split("\r\n", 1)[0], branch.group(1) if branch else "", cseq.group(1) if cseq else "")
        if key not in seen:
            seen.add(key)
            out.append(m)
    return out
