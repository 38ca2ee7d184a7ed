"""Concurrent G.711 media streams in one process: how many keep their 20 ms schedule, and what
CPU each costs beside SIPp's RTP echo carrying the same packets.

Run: ``python benchmarks/bench_media_calls.py [--steps 50,100,150,176,200,250,300] [--seconds 10]
[--sipp-steps 100,150,200]``.  Writes ``benchmarks/results/media_calls.json``.

**Ours.**  Per step, N :class:`skinnysip.net.media.MediaStream` (N/2 calls: each call is two
streams, one each side, both in this one Python process and event loop) on 127.0.0.1, paired
A<->B, each ``apply(MediaConfig(payload_type=0, ptime=0.02, remote=peer))``: PCMU, 20 ms, both
directions, RTCP at the RFC 3550 interval (``rtcp_scale=1``), jitter buffer, play-out and
decoding, no recordings.  The audio source is a 1 s tone looped (like a WAV file: reading a
frame is a slice, so the source costs nothing).  A stream's media clock ticks at its open time
+ i x 20 ms; by default (``--phases spread``) each stream is opened at a random phase of the
20 ms cycle, as calls starting at random moments are; ``--phases burst`` opens them back to
back, so all ticks fall together and every cycle's work comes in one burst (the packets at the
end of a burst are late by the burst's length: at ~0.1 ms of work per tick, 100 streams make a
10 ms burst).  After ``--warmup`` seconds the step is measured for ``--seconds``:

- *send lateness*: the driver counts only frames it skipped (``report()["sent"]["late"]``, the
  media clock running more than one ptime behind); it has no per-packet lateness counter.  So
  the benchmark wraps each stream's private ``_sendto`` (the call that hands an RTP datagram to
  the transport) and records, per packet, ``send time - RTP timestamp / 8000``.  On time that
  offset is constant for a stream (deadlines are ``t0 + i * ptime`` and the timestamp advances
  160 per tick, skipped ticks included), so a packet's lateness is its offset minus the
  stream's smallest offset since it started sending.  "late" = more than 10 ms late, and every
  skipped frame counts as late (it was never sent).  Nothing in ``src/`` is changed.
- *receive loss*: expected (``stats.expected``) - received (``packets_received``) over the
  window, summed over streams; plus the kernel's UDP receive-buffer drops (``/proc/net/snmp``,
  machine-wide) and the jitter buffer's discards for arriving too late to be played (whole run).
- *CPU*: ``time.process_time()`` of this process over the window (user + system, all threads),
  per stream and per call, as seconds of CPU per second of media (= fraction of one core).

A step passes when < 1 % of packets are > 10 ms late and no packet is lost.  Steps stop after
the first step that fails twice (``--tries``).  The result is the highest N that passed.

**SIPp.**  The same packet load through a C peer: one ``sipp -sn uas -rtp_echo -mp PORT``
(SIPp echoes every datagram arriving on its media port, and on port + 2, back to its sender),
and N of our streams in this process sending to it (RTP to PORT, RTCP to PORT + 2, so both are
echoed).  SIPp then receives and sends what N of our streams receive and send.  SIPp's CPU is
read from ``/proc/<pid>/stat`` (utime + stime, all threads) over the window and divided by the
packets it echoed (counted by our streams), scaled to one stream's 50 + 50 packets/s.  The
ratio is our CPU per stream / SIPp's (how many times more CPU we spend for the same packets;
we also jitter-buffer, decode, encode and keep RTCP statistics, SIPp only echoes).

Other processes on the machine share the 2 cores; the 1-minute load average before each step
is recorded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from skinnysip.net.media import MediaConfig, MediaStream
from skinnysip.rtp import tones

HOST = "127.0.0.1"
PTIME = 0.02
LATE = 0.010
CLK_TCK = os.sysconf("SC_CLK_TCK")


class LoopSource:
    """A precomputed tone played in a loop (what a WAV source costs: a slice per frame)."""

    def __init__(self, freq: float) -> None:
        self._pcm = np.tile(tones.sine(freq, 1.0, amplitude=0.3), 2)
        self._pos = 0

    def read(self, n: int) -> np.ndarray:
        frame = self._pcm[self._pos:self._pos + n]
        self._pos = (self._pos + n) % 8000
        return frame


class SendProbe:
    """Records ``send time - RTP timestamp / 8000`` of each RTP packet a stream sends, by
    wrapping the stream's ``_sendto`` (the driver has no per-packet lateness counter)."""

    def __init__(self, stream: MediaStream) -> None:
        self.base = float("inf")  # smallest offset since the first packet: "on time"
        self.offsets: list[float] = []
        self.recording = False
        self._ts0: int | None = None
        original = stream._sendto
        rtp = stream._rtp
        clock = time.monotonic

        def sendto(transport: Any, data: bytes, remote: Any) -> None:
            if transport is rtp and len(data) >= 12 and data[1] & 0x7F in (0, 8):
                now = clock()
                ts = int.from_bytes(data[4:8], "big")
                if self._ts0 is None:
                    self._ts0 = ts
                offset = now - ((ts - self._ts0) & 0xFFFFFFFF) / 8000.0
                if offset < self.base:
                    self.base = offset
                if self.recording:
                    self.offsets.append(offset)
            original(transport, data, remote)

        stream._sendto = sendto  # type: ignore[method-assign]

    def lateness(self) -> np.ndarray:
        return np.asarray(self.offsets, dtype=np.float64) - self.base


def udp_rcvbuf_errors() -> int:
    rows = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines() if line.startswith("Udp:")]
    return int(rows[1][rows[0].index("RcvbufErrors")])


def proc_cpu(pid: int) -> float:
    """utime + stime of a process (all threads), seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _received(streams: list[MediaStream]) -> dict[str, int]:
    """Counters read from the streams' public attributes (not ``report()``, which builds a
    quality estimate per stream: N of them at once stall the loop for tens of ms)."""
    totals = {"expected": 0, "packets": 0, "skipped_sends": 0, "rtcp": 0}
    for s in streams:
        totals["expected"] += s.stats.expected
        totals["packets"] += s.packets_received
        totals["skipped_sends"] += s.late_sent
        totals["rtcp"] += s.rtcp_received
    return totals


async def _open(n: int, phases: str) -> list[MediaStream]:
    """Open n streams.  A stream's media clock ticks at ``open time + i * ptime``, so the open
    time sets its phase within the 20 ms cycle.  ``spread``: each stream opens at a random phase
    (seeded), as calls that start at random moments do; ``burst``: all open back to back (a few
    ms apart), so their ticks fall together and each cycle's work comes in one burst."""
    streams: list[MediaStream] = []
    loop = asyncio.get_running_loop()
    rng = np.random.default_rng(n)
    start = loop.time()
    try:
        for i in range(n):
            if phases == "spread":
                phase = float(rng.uniform(0.0, PTIME))
                await asyncio.sleep((phase - (loop.time() - start)) % PTIME)
            streams.append(await MediaStream.open(HOST, source=LoopSource(300.0 + 10 * (i % 50)), name=f"s{i}",
                                                  seed=i))
    except BaseException:
        await asyncio.gather(*(s.close() for s in streams), return_exceptions=True)
        raise
    return streams


async def _measure(streams: list[MediaStream], probes: list[SendProbe], warmup: float,
                   seconds: float) -> dict[str, Any]:
    await asyncio.sleep(warmup)
    gc.collect()  # a full collection of the set-up's garbage stalls the loop ~25 ms: not in the window
    await asyncio.sleep(0.5)
    before = _received(streams)
    drops0 = udp_rcvbuf_errors()
    for p in probes:
        p.recording = True
    cpu0, wall0 = time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    cpu1, wall1 = time.process_time(), time.monotonic()
    for p in probes:
        p.recording = False
    after = _received(streams)
    drops = udp_rcvbuf_errors() - drops0
    d = {k: after[k] - before[k] for k in after}
    late = np.concatenate([p.lateness() for p in probes]) if probes else np.zeros(0)
    skipped = d["skipped_sends"]
    sent = int(late.size)
    late_count = int(np.count_nonzero(late > LATE)) + skipped
    wall = wall1 - wall0
    return {
        "seconds": round(wall, 3), "cpu_s": round(cpu1 - cpu0, 3), "cpu_fraction": round((cpu1 - cpu0) / wall, 3),
        "sent": sent, "skipped": skipped, "late": late_count,
        "late_pct": round(100.0 * late_count / max(1, sent + skipped), 3),
        "lateness_p50_ms": round(float(np.percentile(late, 50)) * 1000, 2) if sent else None,
        "lateness_p99_ms": round(float(np.percentile(late, 99)) * 1000, 2) if sent else None,
        "lateness_max_ms": round(float(late.max()) * 1000, 2) if sent else None,
        "expected": d["expected"], "received": d["packets"], "lost": max(0, d["expected"] - d["packets"]),
        "rtcp_received": d["rtcp"], "kernel_rcvbuf_drops": drops,
        # over the whole run, warm-up included: packets the jitter buffer discarded as too late to play
        "jitter_buffer_late_total": sum(s.report()["jitter_buffer"]["late"] for s in streams),
    }


async def ours_step(n: int, warmup: float, seconds: float, phases: str = "spread") -> dict[str, Any]:
    streams = await _open(n, phases)
    try:
        probes = [SendProbe(s) for s in streams]
        for a, b in zip(streams[0::2], streams[1::2], strict=True):
            a.apply(MediaConfig(payload_type=0, ptime=PTIME, remote=(HOST, b.local_port)))
            b.apply(MediaConfig(payload_type=0, ptime=PTIME, remote=(HOST, a.local_port)))
        m = await _measure(streams, probes, warmup, seconds)
    finally:
        await asyncio.gather(*(s.close() for s in streams), return_exceptions=True)
    m["streams"], m["calls"], m["phases"] = n, n // 2, phases
    m["cpu_per_stream"] = round(m["cpu_fraction"] / n, 5)
    m["cpu_per_call"] = round(2 * m["cpu_fraction"] / n, 5)
    m["ok"] = m["late_pct"] < 1.0 and m["lost"] == 0 and m["sent"] > 0
    return m


async def sipp_step(n: int, warmup: float, seconds: float, phases: str = "spread") -> dict[str, Any]:
    sipp = shutil.which("sipp")
    assert sipp is not None
    media = _free_even_port()
    sip_port = _free_port()
    proc = subprocess.Popen([sipp, "-sn", "uas", "-i", HOST, "-p", str(sip_port), "-mp", str(media), "-rtp_echo",
                             "-nostdin", "-timeout", f"{int(warmup + seconds + 120)}s"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        await asyncio.sleep(0.5)
        if proc.poll() is not None:
            raise RuntimeError(f"sipp exited with {proc.returncode}")
        streams = await _open(n, phases)
        try:
            for s in streams:
                s.apply(MediaConfig(payload_type=0, ptime=PTIME, remote=(HOST, media), remote_rtcp=(HOST, media + 2)))
            await asyncio.sleep(warmup)
            before = _received(streams)
            cpu0, sipp0, wall0 = time.process_time(), proc_cpu(proc.pid), time.monotonic()
            await asyncio.sleep(seconds)
            cpu1, sipp1, wall1 = time.process_time(), proc_cpu(proc.pid), time.monotonic()
            after = _received(streams)
        finally:
            await asyncio.gather(*(s.close() for s in streams), return_exceptions=True)
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
    wall = wall1 - wall0
    echoed = (after["packets"] - before["packets"]) + (after["rtcp"] - before["rtcp"])
    sipp_cpu = sipp1 - sipp0
    # one stream's load is 50 packets/s in and 50 out: express SIPp's CPU per echoed packet that way
    stream_equivalents = echoed / wall / (1 / PTIME)
    return {"streams": n, "seconds": round(wall, 3), "echoed_packets": echoed,
            "expected": after["expected"] - before["expected"],
            "sipp_cpu_s": round(sipp_cpu, 3), "sipp_cpu_fraction": round(sipp_cpu / wall, 4),
            "sipp_cpu_per_stream": round(sipp_cpu / wall / stream_equivalents, 6) if echoed else None,
            "load_generator_cpu_fraction": round((cpu1 - cpu0) / wall, 3)}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _free_even_port() -> int:
    """An even port with port + 2 free too (SIPp binds both)."""
    for _ in range(200):
        port = _free_port() & ~1
        socks = []
        try:
            for p in (port, port + 2):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind((HOST, p))
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free even port pair")


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    steps = [int(x) for x in args.steps.split(",")]
    ours: list[dict[str, Any]] = []
    best = 0
    for n in steps:
        n -= n % 2
        for attempt in range(1, args.tries + 1):
            load = os.getloadavg()[0]
            m = await ours_step(n, args.warmup, args.seconds, args.phases)
            m["loadavg_1min_before"], m["try"] = round(load, 2), attempt
            ours.append(m)
            print(f"ours  N={n:4d} streams ({n // 2:3d} calls) late>10ms {m['late_pct']:6.2f}% "
                  f"(p99 {m['lateness_p99_ms']} ms, skipped {m['skipped']}) lost {m['lost']:5d} "
                  f"kernel drops {m['kernel_rcvbuf_drops']:4d} CPU {m['cpu_fraction']:.2f} core "
                  f"= {m['cpu_per_stream'] * 1000:.2f} ms/s per stream  load {load:.2f}  "
                  f"{'ok' if m['ok'] else 'FAIL'}", flush=True)
            if m["ok"]:
                break
        if not ours[-1]["ok"]:
            break
        best = n
    sipp_rows: list[dict[str, Any]] = []
    if shutil.which("sipp") and args.sipp_steps:
        for n in [int(x) for x in args.sipp_steps.split(",")]:
            r = await sipp_step(n, args.warmup, args.seconds, args.phases)
            sipp_rows.append(r)
            print(f"sipp  N={n:4d} streams echoed {r['echoed_packets']} packets (expected {r['expected']}), "
                  f"SIPp CPU {r['sipp_cpu_fraction']:.3f} core = "
                  f"{(r['sipp_cpu_per_stream'] or 0) * 1000:.3f} ms/s per stream", flush=True)
    else:
        print("sipp missing (apt-get install sip-tester) or --sipp-steps empty: no SIPp comparison")
    return {"ours": ours, "sipp": sipp_rows, "max_streams_ok": best}


def _summary(result: dict[str, Any]) -> None:
    ours_ok = {r["streams"]: r for r in result["ours"] if r["ok"]}
    best = result["max_streams_ok"]
    print()
    print(f"highest N with < 1 % packets > 10 ms late and no loss: {best} streams = {best // 2} calls "
          "(both sides of each call in this one process)")
    print(f"{'streams':>8} {'ours CPU ms/s per stream':>25} {'SIPp echo CPU ms/s per stream':>30} {'ratio':>7}")
    for r in result["sipp"]:
        n = r["streams"]
        mine = ours_ok.get(n) or next((o for o in reversed(result["ours"]) if o["streams"] == n), None)
        if mine is None or not r["sipp_cpu_per_stream"]:
            ratio = None
            mine_s = "-"
        else:
            ratio = mine["cpu_per_stream"] / r["sipp_cpu_per_stream"]
            mine_s = f"{mine['cpu_per_stream'] * 1000:.2f}"
        r["ratio_ours_over_sipp"] = round(ratio, 1) if ratio else None
        print(f"{n:8d} {mine_s:>25} {(r['sipp_cpu_per_stream'] or 0) * 1000:30.3f} "
              f"{(f'{ratio:.1f}x' if ratio else '-'):>7}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", default="50,100,150,176,200,250,300", help="streams per step (even; 2 per call)")
    ap.add_argument("--sipp-steps", default="100,150,200", help="streams sent to SIPp's echo per step ('' = none)")
    ap.add_argument("--seconds", type=float, default=10.0, help="measured seconds per step")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    ap.add_argument("--phases", choices=("spread", "burst"), default="spread",
                    help="streams start at random phases of the 20 ms cycle, or all in one burst")
    ap.add_argument("--tries", type=int, default=2, help="runs of a failing step before stopping")
    args, _ = ap.parse_known_args()
    result = asyncio.run(main_async(args))
    _summary(result)
    result.update({"python": platform.python_version(), "numpy": np.__version__, "cpus": os.cpu_count(),
                   "seconds": args.seconds, "warmup": args.warmup, "phases": args.phases})
    out = Path(__file__).parent / "results" / "media_calls.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
