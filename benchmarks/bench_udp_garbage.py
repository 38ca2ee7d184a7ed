"""How much garbage can precede a valid SIP response over UDP before the response is lost?

Run: ``python benchmarks/bench_udp_garbage.py [--counts 1000,10000,30000,100000] [--size 200] [--tries 3]``.

A server process on 127.0.0.1 (plain Python, its own process so it does not share our GIL)
answers each OPTIONS with COUNT garbage datagrams of SIZE octets (binary noise, then
text that is not SIP) sent as fast as the socket takes them, then at once the real
``200 OK``. The client is, in turn:

- ``skinnysip``: :func:`skinnysip.probes.sip.options` (5 s timeout, T1 5 s, so the OPTIONS is
  not retransmitted within the timeout: the 200 after the one burst is heard or it is lost);
- ``sipsak``: ``sipsak -s sip:probe@127.0.0.1:PORT`` (C, one ``recv`` per datagram), exit 0
  when it saw the 200. (sipsak 0.9.8 gives up at the first datagram that is not the answer,
  so it hears the 200 only without garbage: the comparison shows that, not a buffer size.)

For each COUNT and client: how many of ``--tries`` runs heard the 200, the time to the
200, and the kernel's UDP receive-buffer drops during the run (``RcvbufErrors`` in
``/proc/net/snmp``, machine-wide). The table shows the largest COUNT at which every try
heard the 200, per client, and ours / sipsak's. Writes ``benchmarks/results/udp_garbage.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

SERVER = r'''
import re, socket, sys
count, size = int(sys.argv[1]), int(sys.argv[2])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
sock.bind(("127.0.0.1", 0))
print(sock.getsockname()[1], flush=True)
junk = [(b"\x16\x03\x01" + b"%06d not SIP at all " % i).ljust(size, b"x") for i in range(min(count, 1000))]
sock.settimeout(30)
answered = 0
while answered < 20:
    try:
        data, addr = sock.recvfrom(65536)
    except OSError:
        break
    head = data.decode("latin-1").split("\r\n\r\n", 1)[0]
    if head.startswith("ACK"):
        continue
    f = {n: (re.search(rf"^{n}:(.*)$", head, re.M | re.I) or [None, ""])[1].strip()
         for n in ("Via", "From", "To", "Call-ID", "CSeq")}
    ok = (f"SIP/2.0 200 OK\r\nVia: {f['Via']}\r\nFrom: {f['From']}\r\nTo: {f['To']};tag=g1\r\n"
          f"Call-ID: {f['Call-ID']}\r\nCSeq: {f['CSeq']}\r\nContent-Length: 0\r\n\r\n").encode("latin-1")
    for i in range(count):
        while True:
            try:
                sock.sendto(junk[i % len(junk)], addr)
                break
            except BlockingIOError:
                pass
    sock.sendto(ok, addr)
    answered += 1
'''


def rcvbuf_errors() -> int:
    try:
        lines = Path("/proc/net/snmp").read_text().splitlines()
    except OSError:
        return -1
    udp = [line.split() for line in lines if line.startswith("Udp:")]
    return int(udp[1][udp[0].index("RcvbufErrors")]) if len(udp) >= 2 else -1


def start_server(count: int, size: int) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(count), str(size)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    return proc, port


def ours(port: int) -> tuple[bool, float, int]:
    from skinnysip.probes.sip import ProbeRequest, options

    started = time.monotonic()
    result = asyncio.run(options(ProbeRequest(host="127.0.0.1", port=port, timeout=5.0, t1=5.0)))
    return result.status_code == 200, time.monotonic() - started, result.dropped_messages


def sipsak(port: int) -> tuple[bool, float, int]:
    started = time.monotonic()
    try:
        done = subprocess.run(["sipsak", "-s", f"sip:probe@127.0.0.1:{port}"], capture_output=True, timeout=30)
    except subprocess.TimeoutExpired:
        return False, time.monotonic() - started, 0
    return done.returncode == 0, time.monotonic() - started, 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", default="0,1000,10000,30000,100000,300000")
    parser.add_argument("--size", type=int, default=200)
    parser.add_argument("--tries", type=int, default=3)
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    clients = {"skinnysip": ours}
    if shutil.which("sipsak"):
        clients["sipsak"] = sipsak
    rows: list[dict[str, object]] = []
    best: dict[str, int] = {name: 0 for name in clients}
    still = {name: True for name in clients}  # heard at every count so far
    print(f"{'garbage':>8} {'client':>10} {'heard':>6} {'time s':>7} {'kernel drops':>12}")
    for count in counts:
        for name, run in clients.items():
            heard, times, drops = 0, [], 0
            for _ in range(args.tries):
                proc, port = start_server(count, args.size)
                before = rcvbuf_errors()
                try:
                    ok, took, _dropped = run(port)
                finally:
                    proc.kill()
                    proc.wait()
                drops += max(0, rcvbuf_errors() - before)
                heard += ok
                times.append(took)
            if heard == args.tries and still[name]:
                best[name] = count
            else:
                still[name] = False
            rows.append({"garbage": count, "client": name, "heard": heard, "tries": args.tries,
                         "seconds": round(sum(times) / len(times), 3), "kernel_drops": drops})
            print(f"{count:>8} {name:>10} {heard:>3}/{args.tries} {sum(times) / len(times):>7.2f} {drops:>12}")
    print()
    for name, count in best.items():
        print(f"{name}: every try heard the 200 after up to {count} garbage datagrams of {args.size} octets")
    ratio = best["skinnysip"] / best["sipsak"] if best.get("sipsak") else None
    if ratio is not None:
        print(f"ours / sipsak: {ratio:.2f}")
    out = Path(__file__).parent / "results" / "udp_garbage.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({
        "benchmark": "udp_garbage", "size": args.size, "tries": args.tries, "rows": rows, "best": best,
        "ratio_vs_sipsak": ratio, "machine": platform.platform(), "cpus": os.cpu_count(),
        "rmem_max": Path("/proc/sys/net/core/rmem_max").read_text().strip(),
    }, indent=2))


if __name__ == "__main__":
    main()
