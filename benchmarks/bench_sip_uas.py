"""OPTIONS answered by a UAS under SIPp load: skinnysip's ``Responder`` vs Kamailio, side by side.

Run: ``python benchmarks/bench_sip_uas.py [--rates 200,500,1000,2000,4000] [--seconds 3]``.

Three servers answer OPTIONS with 200 on 127.0.0.1 over UDP (all started, loaded one at a time):

- ``skinnysip``: :class:`skinnysip.probes.listen.Responder` (``ListenConfig(host, port,
  transport="udp")``, the code behind ``skinnysip sip listen``, without printing the
  trace) in its own Python process, one event loop;
- ``kamailio``: a minimal configuration that answers OPTIONS statelessly
  (``sl_send_reply("200", "OK")`` with the same Allow/Accept/Supported header fields),
  with ``children=1`` (one UDP worker: one process against one process) by default;
- ``kamailio-tm``: the same answered statefully (``t_newtran`` + ``t_reply``), which keeps
  a transaction per request as our server transactions do (RFC 3261 §17.2.2).

The load is SIPp with an OPTIONS UAC scenario (written below; the request is
retransmitted after 500 ms, doubling, like a client transaction's Timer E), one SIPp run
per rate step and server (``-r RATE -m RATE*SECONDS``), the servers taking turns at each
rate so that other load on the machine falls on all of them; an unclean step is tried
again (``--tries``) and the 1-minute load average before each try is recorded. Each run
is bounded (``-timeout``, and a process deadline). Per step SIPp's statistics file gives successful and failed calls and
retransmissions; a server "keeps up" at a rate when it has 0 failed calls and 0
retransmissions there. Beside them, the kernel's UDP receive-buffer drops during the step
(``RcvbufErrors``, machine-wide): a retransmission usually means the server's socket
buffer overflowed while it was busy. The table shows, per server, the highest such rate (below the
first rate where it did not keep up); the ratios are ours / each Kamailio. A server that
keeps up at the last step is marked ">=": SIPp or the step list is the limit there. Writes
``benchmarks/results/sip_uas.json``. Needs ``sipp`` (Debian ``sip-tester``) and ``kamailio``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "peers")]

from sip_peers import _module_dir, free_port, stop_group  # noqa: E402

OPTIONS_UAC = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="OPTIONS UAC">
  <send retrans="500">
    <![CDATA[
OPTIONS sip:[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
Max-Forwards: 70
From: <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 OPTIONS
Contact: <sip:sipp@[local_ip]:[local_port]>
Accept: application/sdp
Content-Length: 0

]]>
  </send>
  <recv response="200" timeout="8000"/>
</scenario>
"""

# The server side of "ours": the Responder in its own process; ends by itself after argv[2] s.
OURS_SERVER = """
import asyncio, sys
from skinnysip.probes.listen import ListenConfig, Responder

async def serve() -> None:
    responder = Responder(ListenConfig(host="127.0.0.1", port=int(sys.argv[1]), transport="udp"))
    await responder.start()
    try:
        await asyncio.wait_for(asyncio.Event().wait(), float(sys.argv[2]))
    except TimeoutError:
        pass
    finally:
        await responder.close()

asyncio.run(serve())
"""


def kamailio_cfg(port: int, children: int, rundir: Path, stateful: bool = False) -> str:
    """Kamailio answering OPTIONS with 200: statelessly (``sl_send_reply``), or with
    ``stateful`` in a tm transaction (``t_newtran`` + ``t_reply``: retransmissions of the
    request are absorbed and the 200 re-sent, as our server transaction does)."""
    reply = 't_newtran();\n        t_reply("200", "OK");' if stateful else 'sl_send_reply("200", "OK");'
    tm = 'loadmodule "tm.so"\n' if stateful else ""
    return f"""#!KAMAILIO
debug=1
log_stderror=yes
fork=yes
children={children}
disable_tcp=yes
auto_aliases=no
listen=udp:127.0.0.1:{port}
server_signature=yes
mpath="{_module_dir()}"

loadmodule "kex.so"
loadmodule "corex.so"
{tm}loadmodule "sl.so"
loadmodule "textops.so"
loadmodule "ctl.so"

modparam("ctl", "binrpc", "unix:{rundir}/kamailio_ctl")

request_route {{
    if (is_method("OPTIONS")) {{
        append_to_reply("Allow: INVITE, ACK, CANCEL, OPTIONS, BYE\\r\\n");
        append_to_reply("Accept: application/sdp\\r\\n");
        append_to_reply("Supported: \\r\\n");
        {reply}
        exit;
    }}
    if (is_method("ACK")) {{
        exit;
    }}
    sl_send_reply("404", "Not Here");
    exit;
}}
"""


def _wait_udp_options(port: int, timeout: float) -> None:
    """Block until something answers an OPTIONS on 127.0.0.1:port (bounded)."""
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(0.3)
        lport = s.getsockname()[1]
        n = 0
        while time.monotonic() < deadline:
            n += 1
            msg = (f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
                   f"Via: SIP/2.0/UDP 127.0.0.1:{lport};branch=z9hG4bK-ready-{n}\r\n"
                   f"Max-Forwards: 70\r\nFrom: <sip:ready@127.0.0.1>;tag=r{n}\r\nTo: <sip:127.0.0.1:{port}>\r\n"
                   f"Call-ID: ready-{n}@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
            with contextlib.suppress(OSError):
                s.sendto(msg.encode(), ("127.0.0.1", port))
                data = s.recv(65536)
                if data.startswith(b"SIP/2.0 200"):
                    return
            time.sleep(0.05)
    raise TimeoutError(f"no 200 to OPTIONS from 127.0.0.1:{port} after {timeout}s")


@contextlib.contextmanager
def ours(lifetime: float) -> Iterator[int]:
    port = free_port(socket.SOCK_DGRAM)
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([sys.executable, "-c", OURS_SERVER, str(port), str(lifetime)],
                                stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        try:
            _wait_udp_options(port, 20)
            yield port
        finally:
            stop_group(proc)  # type: ignore[arg-type]
            if proc.returncode not in (0, -signal.SIGTERM):
                err.seek(0)
                text = err.read().decode(errors="replace")
                print(f"skinnysip server exited {proc.returncode}: {text[-2000:]}", file=sys.stderr)


@contextlib.contextmanager
def kamailio(children: int, stateful: bool = False) -> Iterator[int]:
    binary = shutil.which("kamailio")
    if binary is None:
        raise RuntimeError("kamailio not installed (bash scripts/install-deps.sh)")
    workdir = Path(tempfile.mkdtemp(prefix="skinnysip-bench-kamailio-"))
    port = free_port(socket.SOCK_DGRAM)
    cfg = workdir / "kamailio.cfg"
    cfg.write_text(kamailio_cfg(port, children, workdir, stateful))
    check = subprocess.run([binary, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30)
    if check.returncode != 0:
        raise RuntimeError(f"kamailio rejected its config:\n{check.stderr[-3000:]}")
    log = open(workdir / "kamailio.log", "wb")  # noqa: SIM115 - closed in finally
    # 256 MB shared memory: with 64 MB, tm's transactions (kept for its 5 s wait timer) fill
    # it near 2000 requests/s and kamailio-tm slows down for that reason alone.
    proc = subprocess.Popen([binary, "-f", str(cfg), "-DD", "-E", "-P", str(workdir / "kamailio.pid"),
                             "-Y", str(workdir), "-m", "256", "-M", "8"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_udp_options(port, 20)
        yield port
    finally:
        stop_group(proc)
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


def _csv_last(path: Path) -> dict[str, str]:
    lines = path.read_text(errors="replace").strip().splitlines() if path.exists() else []
    if len(lines) < 2:
        return {}
    return dict(zip(lines[0].split(";"), lines[-1].split(";"), strict=False))


def udp_rcvbuf_errors() -> int | None:
    """The kernel's count of UDP datagrams dropped because a socket's receive buffer was
    full (``/proc/net/snmp`` Udp RcvbufErrors; machine-wide), or None if unavailable."""
    try:
        rows = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines() if line.startswith("Udp:")]
        return int(rows[1][rows[0].index("RcvbufErrors")])
    except (OSError, IndexError, ValueError):
        return None


def sipp_step(port: int, rate: int, seconds: float, workdir: Path) -> dict[str, object]:
    """One SIPp run at ``rate`` calls/s for ``seconds``; returns its counts."""
    sipp = shutil.which("sipp")
    if sipp is None:
        raise RuntimeError("sipp not installed (apt-get install sip-tester)")
    scenario = workdir / "options_uac.xml"
    scenario.write_text(OPTIONS_UAC)
    count = max(1, int(rate * seconds))
    stat = workdir / f"stat_{port}_{rate}.csv"
    local = free_port(socket.SOCK_DGRAM)
    limit = seconds + 20  # the calls, plus the last call's 8 s response timeout, plus slack
    argv = [sipp, f"127.0.0.1:{port}", "-sf", str(scenario), "-i", "127.0.0.1", "-p", str(local),
            "-t", "u1", "-r", str(rate), "-rp", "1000", "-m", str(count), "-l", str(max(rate * 10, 1000)),
            "-nostdin", "-trace_stat", "-stf", str(stat), "-fd", "1",
            "-timeout", f"{int(limit)}s", "-timeout_error", "-max_recv_loops", "10000", "-max_sched_loops", "10000"]
    drops_before = udp_rcvbuf_errors()
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            cwd=workdir)
    try:
        _, err = proc.communicate(timeout=limit + 10)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGUSR1)  # SIPp: dump statistics and quit
        try:
            _, err = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate(timeout=5)
    elapsed = time.perf_counter() - start
    drops_after = udp_rcvbuf_errors()
    row = _csv_last(stat)

    def n(key: str) -> int:
        try:
            return int(row.get(key, "0") or 0)
        except ValueError:
            return 0

    ok, failed, retrans = n("SuccessfulCall(C)"), n("FailedCall(C)"), n("Retransmissions(C)")
    lost = count - ok - failed  # calls SIPp never finished (e.g. its global timeout)
    return {
        "rate": rate, "calls": count, "successful": ok, "failed": failed + max(0, lost),
        "retransmissions": retrans, "elapsed_s": round(elapsed, 2), "sipp_exit": proc.returncode,
        "udp_rcvbuf_drops": (drops_after - drops_before) if drops_before is not None and drops_after is not None
        else None,
        "sipp_stderr": err.decode(errors="replace")[-400:] if proc.returncode not in (0, 1) else "",
    }


def _clean(step: dict[str, object]) -> bool:
    return step["failed"] == 0 and step["retransmissions"] == 0


def run_steps(ports: dict[str, int], rates: list[int], seconds: float, tries: int,
              stop_after: int) -> dict[str, list[dict[str, object]]]:
    """Every rate step against every server in turn (interleaved, so that other load on the
    machine spreads over all of them); an unclean step is tried again up to ``tries`` times
    in all (clean if any try is); a server is dropped after ``stop_after`` unclean steps in
    a row."""
    results: dict[str, list[dict[str, object]]] = {name: [] for name in ports}
    misses = dict.fromkeys(ports, 0)
    with tempfile.TemporaryDirectory(prefix="skinnysip-bench-sipp-") as tmp:
        for rate in rates:
            for name, port in ports.items():
                if misses[name] >= stop_after:
                    continue
                attempts = []
                for _ in range(tries):
                    load = os.getloadavg()[0]
                    step = sipp_step(port, rate, seconds, Path(tmp))
                    step["loadavg_1min_before"] = round(load, 2)
                    attempts.append(step)
                    print(f"  {name:12} {rate:6d}/s  ok {step['successful']:7}  failed {step['failed']:6}  "
                          f"retrans {step['retransmissions']:6}  rcvbuf drops {step['udp_rcvbuf_drops']}  "
                          f"{step['elapsed_s']:5.1f} s  load {load:4.1f}",
                          flush=True)
                    time.sleep(0.5)
                    if _clean(step):
                        break
                best = next((a for a in attempts if _clean(a)), attempts[-1])
                results[name].append({**best, "tries": attempts})
                misses[name] = 0 if _clean(best) else misses[name] + 1
    return results


def highest_clean(steps: list[dict[str, object]]) -> int:
    best = 0
    for s in steps:
        if s["failed"] == 0 and s["retransmissions"] == 0:
            best = int(s["rate"])  # type: ignore[call-overload]
        else:
            break
    return best


SERVERS = ("skinnysip", "kamailio", "kamailio-tm")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="200,500,1000,1500,2000,3000,4000,8000,16000,32000",
                    help="calls/s steps (comma-separated)")
    ap.add_argument("--seconds", type=float, default=3.0, help="length of each step (default 3 s)")
    ap.add_argument("--kamailio-children", type=int, default=1, help="Kamailio UDP workers (default 1)")
    ap.add_argument("--tries", type=int, default=2, help="tries of an unclean step (default 2)")
    ap.add_argument("--stop-after", type=int, default=2, help="stop a server after this many unclean steps in a row")
    args = ap.parse_args()
    rates = sorted({int(r) for r in args.rates.split(",") if r.strip()})
    if not rates or any(r <= 0 or r > 50000 for r in rates) or not 0 < args.seconds <= 60:
        ap.error("rates must be 1-50000 and seconds 0-60")
    if not 1 <= args.kamailio_children <= 16 or not 1 <= args.tries <= 5 or not 1 <= args.stop_after <= 10:
        ap.error("--kamailio-children 1-16, --tries 1-5, --stop-after 1-10")
    if not shutil.which("sipp"):
        print("sipp missing: apt-get install sip-tester", file=sys.stderr)
        return 1
    # our server process also ends by itself after this
    lifetime = (args.seconds + 30) * len(rates) * len(SERVERS) * args.tries + 60
    print(f"OPTIONS over UDP on 127.0.0.1, {args.seconds:g} s per step; {os.cpu_count()} CPUs; "
          f"kamailio children={args.kamailio_children}")
    with ours(lifetime) as p1, kamailio(args.kamailio_children) as p2, \
            kamailio(args.kamailio_children, stateful=True) as p3:
        results = run_steps({"skinnysip": p1, "kamailio": p2, "kamailio-tm": p3}, rates, args.seconds,
                            args.tries, args.stop_after)

    best = {name: highest_clean(steps) for name, steps in results.items()}
    capped = {name: best[name] == rates[-1] for name in SERVERS}
    ratios = {name: (best["skinnysip"] / best[name] if best[name] else None) for name in SERVERS[1:]}
    print()
    header = f"{'rate/s':>7} | " + " | ".join(f"{name + ' failed':>18} {'retrans':>8}" for name in SERVERS)
    print(header)
    print("-" * len(header))
    by_rate = {name: {int(s["rate"]): s for s in steps} for name, steps in results.items()}  # type: ignore[call-overload]
    for rate in rates:
        cells = []
        for name in SERVERS:
            st = by_rate[name].get(rate)
            cells.append(f"{st['failed']:>18} {st['retransmissions']:>8}" if st else f"{'-':>18} {'-':>8}")
        print(f"{rate:7d} | " + " | ".join(cells))
    print()
    print(f"{'server':14} {'highest clean rate/s':>21} {'ours / this':>12}")
    for name in SERVERS:
        shown = f"{'>=' if capped[name] else ''}{best[name]}"
        r = ratios.get(name)
        rtext = "-" if name == "skinnysip" else (f"{'<=' if capped[name] else ''}{r:.3f}" if r is not None else "n/a")
        print(f"{name:14} {shown:>21} {rtext:>12}")
    print("(clean: 0 failed calls and 0 retransmissions in the step; '>=': kept up at the highest step tried, "
          "so SIPp or the step list is the limit)")
    out = ROOT / "benchmarks" / "results" / "sip_uas.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "benchmark": "OPTIONS answered under SIPp load (UDP, 127.0.0.1): skinnysip Responder vs Kamailio",
        "seconds_per_step": args.seconds,
        "kamailio_children": args.kamailio_children,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "steps": results,
        "highest_clean_rate": best,
        "capped_by_highest_step": capped,
        "ratio_ours_vs": ratios,
    }, indent=2) + "\n")
    print(f"written {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
