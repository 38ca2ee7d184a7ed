"""``skinnysip load options|register|call|message|user|answer HOST …``: SIP load in SIPp's spirit.

``answer`` is the called side (SIPp ``-sn uas`` behind a registration): every ``--users``
user registers (``-r`` registrations per second at first) and each call brought to one is
an attempt, answered with media until the caller hangs up (or ``--hold``); it runs for
``--duration``, until ``-m`` calls, or until stopped (``q``, Ctrl-C), an hour at most. A user
that cannot register is named and makes the exit status 1; when none can, it is 3.
``--no-register`` listens on HOST:PORT instead and answers every call sent there (``sipp -sn
uas``).

Rate (``-r``, per second), concurrency limit (``-l``), total count (``-m``), ``--duration``
and ``--ramp-up`` (seconds, as SIPp's options), ``--hold`` (seconds a call stays up),
``--timeout`` (ms, as every skinnysip command). Users and passwords from a SIPp ``-inf``
style file (``--users``), or ``--user``/``--password`` (``$SKINNYSIP_PASSWORD``).

While it runs: a live view on a terminal; the rate changes with the keys ``+``/``-`` (±1/s)
and ``*``/``/`` (±10/s), ``q`` stops starting new attempts (SIPp's keys); or write a number
to the ``--rate-file`` (read once per interval). ``--rate-increase N`` steps the rate up by N
every ``--rate-interval`` seconds (default: ``--interval``) until the step that would pass
``--rate-max`` (then no new attempts; ``--no-rate-quit``: keep going at it), as SIPp's
``-rate_increase``/``-rate_interval``/``-rate_max``/``-no_rate_quit``: the summary lists each
step's counts, the way to find the rate a server stops keeping up at. The first Ctrl-C (SIGINT) stops starting new
attempts too and the summary is printed once the running ones end; a second one aborts the
running ones (calls hang up: BYE, or CANCEL while ringing; counted failed as ``aborted``) and
the summary follows; a third quits at once. ``--csv FILE``: one row per interval with
SIPp's ``-trace_stat`` column names; ``--json``: the final summary.

``--processes N``: N worker processes on this machine, each with its share of the rate, count
and limit, aggregated into the same view, CSV and summary (``--engine processes``, the
default); ``--engine ray`` (or ``--ray-address``) runs them on Ray, across machines.

Exit status: 0 when the failures are within ``--max-failures`` (a count, or a percentage of
the attempts such as ``1%``; default 0), 1 when they exceed it or a worker process failed
(its share is missing; a warning names it), 2 for bad arguments or a local error (a file, Ray
missing; also an output file that could not be written to the end, such as on a full disk: the
run goes on and a warning names the file), 3 when the server cannot be reached at all (the project's sipsak-style statuses).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

import click

from skinnysip.cli.common import FloatRange, Group, argument, exit_with, option, port_range
from skinnysip.net.event_loop import EVENT_LOOPS

app = Group("load", help="SIP load in SIPp's spirit: options, register, call, message, user, answer.")

EXIT_OK, EXIT_FAILURES, EXIT_USAGE, EXIT_NO_ANSWER = 0, 1, 2, 3


def _fail(message: str, code: int = EXIT_USAGE) -> None:
    click.echo(f"error: {message}", err=True)
    raise exit_with(code)


def max_failures_exceeded(limit: str, failed: int, attempted: int) -> bool:
    """``--max-failures``: ``N`` (failures allowed, N >= 0) or ``P%`` (of the attempts,
    0 <= P <= 100). ``ValueError`` for anything else."""
    text = limit.strip()
    if text.endswith("%"):
        percent = float(text[:-1])
        if not 0.0 <= percent <= 100.0:  # also refuses nan
            raise ValueError(f"{text}: a percentage is within 0-100 %")
        return failed > percent / 100.0 * attempted
    count = int(text)
    if count < 0:
        raise ValueError(f"{text}: a count is 0 or more")
    return failed > count


def busy_note(watchdog: dict[str, Any]) -> str | None:
    """A note when the summary's ``watchdog`` says the event loop was busy all the time in at
    least a quarter of its windows (two at least): the load generator was at its own limit
    there, even where its loop was never late enough to trip SIPp's watchdog. Else None."""
    busy, windows = int(watchdog.get("busyWindows") or 0), int(watchdog.get("windows") or 0)
    if busy < 2 or busy * 4 < windows:
        return None
    return (f"note: this load generator's event loop never waited in {busy} of its {windows} 0.4 s windows: "
            "it was at its own limit there, so attempts may have started late and response times "
            "include its delay — lower the rate or use --processes")


def _check_max_failures(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        max_failures_exceeded(value, 0, 0)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a count (0 or more) or a percentage within 0-100 like 1%",
                                 param_hint="--max-failures") from None
    return value


class _Keys:
    """SIPp's rate keys on a terminal (cbreak mode, restored on exit)."""

    def __init__(self, monitor_ref: dict[str, Any], view: Any) -> None:
        self.ref = monitor_ref
        self.view = view
        self.saved: Any = None

    def start(self) -> None:
        if not sys.stdin.isatty():
            return
        import termios
        import tty

        fd = sys.stdin.fileno()
        self.saved = termios.tcgetattr(fd)
        tty.setcbreak(fd)
        asyncio.get_running_loop().add_reader(fd, self._key)
        self.view.hint = "keys  + - ±1/s  * / ±10/s  p pause/resume  q stop"

    def _key(self) -> None:
        fd = sys.stdin.fileno()
        try:
            data = os.read(fd, 1)
        except OSError:  # the terminal is gone (EIO)
            data = b""
        if not data:  # no more keys: a reader left on an end of file would be called for ever
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(fd)
            return
        key = data.decode(errors="replace")
        monitor = self.ref.get("monitor")
        if monitor is None:
            return
        step = {"+": 1.0, "-": -1.0, "*": 10.0, "/": -10.0}.get(key)
        if step is not None:
            monitor.set_rate(max(0.1, monitor.rate + step))
            self.view.note = f"rate set to {monitor.rate:g}/s"
        elif key == "p":
            monitor.pause(not monitor.paused)
            self.view.note = "paused: no new attempts (p to resume)" if monitor.paused else "resumed"
        elif key in ("q", "Q"):
            monitor.stop()
            self.view.note = "stopping: no new attempts"

    def stop(self) -> None:
        if self.saved is None:
            return
        import termios

        fd = sys.stdin.fileno()
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(fd)
        termios.tcsetattr(fd, termios.TCSADRAIN, self.saved)


def _rate_file_sink(path: str, ref: dict[str, Any], warn: Callable[[str], None]) -> Any:
    """A sink that reads ``path`` each interval and applies the rate it holds. A file that
    cannot be read, or holds no rate, is reported through ``warn`` once (until it changes);
    an empty file (being written) is skipped silently."""
    said = ""  # the problem last reported

    def problem(text: str) -> None:
        nonlocal said
        if text != said:
            said = text
            warn(f"--rate-file: {text}; the rate stays")

    def sink(_: Any) -> None:
        nonlocal said
        monitor = ref.get("monitor")
        try:
            with open(path, "rb") as file:  # a number: the first 64 octets are plenty
                text = file.read(64).decode("utf-8", "replace").strip()
        except OSError as exc:
            problem(f"cannot read {path!r}: {exc.strerror or exc}")
            return
        if not text:
            return
        try:
            rate = float(text)
        except ValueError:
            rate = math.nan
        if not (rate > 0 and math.isfinite(rate)):
            problem(f"{text[:20]!r} in {path!r} is not a rate (attempts per second above 0)")
            return
        said = ""
        if monitor is not None and rate != monitor.rate:
            monitor.set_rate(rate)

    return sink


def _run(scenario: str, host: str, port: int | None, transport: str | None, domain: str | None,
         user: str | None, password: str | None, users: str | None, to: str | None, rate: float, limit: int,
         count: int | None, duration: float | None, ramp_up: float, hold: float | None, timeout: int, expires: int,
         unregister: bool, text: str, local_ports: str | None, script: str | None, source: str, codecs: str | None,
         csv_path: str | None, trace_err: str | None, as_json: bool, interval: float, max_failures: str, processes: int,
         engine: str | None, ray_address: str | None, rate_file: str | None, quiet: bool, insecure: bool,
         ca_file: str | None, steps: tuple[float, float | None, float | None, bool] = (0.0, None, None, True),
         connection_per_attempt: bool = False, trace_msg: str | None = None, rtp_ports: str | None = None,
         headers: tuple[str, ...] = (), record: str | None = None, ring: float = 0.0, register: bool = True,
         event_loop: str = "auto", srtp: str = "off",
         identity: tuple[str | None, str | None, str] = (None, None, "A"),
         refresh: tuple[int, float | None] = (0, None), local_ip: str | None = None,
         request: tuple[str | None, str | None, str | None] = (None, None, None)) -> None:
    from skinnysip.addresses import format_host
    from skinnysip.cli.common import (
        CONSOLE_OPTIONS,
        check_source,
        checked_ip,
        comma_list,
        err_console,
        header_fields,
        merge_target,
        parse_target,
        password_from,
        pem_text,
        printable,
        readable_file,
        transport_value,
        writable_directory,
    )
    from skinnysip.load.report import CsvSink, ErrorLogSink, LiveView, ProgressLines, top_statuses
    from skinnysip.load.runner import raise_open_files_limit, run_local, summary
    from skinnysip.load.scenarios import LoadConfig, User, read_users
    from skinnysip.net import event_loop as loops

    # HOST as SIPp and every skinnysip command take it: HOST, HOST:PORT, [IPv6]:PORT, sip:/sips: URI
    target = merge_target(parse_target(host), port, transport_value(transport))
    host, port, transport = target.host, target.port, target.transport or "udp"
    if target.uri is not None and to is None and scenario in ("options", "message", "call", "request"):
        to = target.uri  # sip:bob@host: bob is the target, as SIPp's -s bob with host
    engine = (engine or ("ray" if ray_address else "processes")).strip().lower()
    if engine not in ("processes", "ray"):
        _fail(f"--engine: {engine!r} is not processes or ray")
    if ray_address and engine != "ray":
        _fail("--ray-address joins a Ray cluster: it needs --engine ray (the default with it)")
    user_list: list[User] = []
    order = "SEQUENTIAL"
    if users is not None:
        try:
            user_list, order = read_users(users)
        except OSError as exc:
            _fail(f"--users: cannot read {users!r}: {exc.strerror or exc}")
        except ValueError as exc:
            _fail(f"--users: {exc}")
    elif user is not None:
        user_list = [User(user, password_from(password, prompt=False))]
    if hold is None and scenario != "answer":
        hold = 5.0
    writable_directory(record, "--record")  # the calls make their files there: refused now
    config = LoadConfig(
        scenario=scenario, host=host, port=port, transport=transport, domain=domain,  # type: ignore[arg-type]
        ws_path=target.path or "/",
        users=user_list, user_order=order, to=to, rate=rate, limit=limit, count=count, duration=duration,
        ramp_up=ramp_up, hold=hold, timeout=timeout / 1000.0, expires=expires, unregister=unregister,
        message=text, local_ports=port_range(local_ports, "--local-ports"), source_ip=checked_ip(local_ip),
        user_script=script,
        rtp_ports=port_range(rtp_ports, "--rtp-ports"),
        source=source, tls_verify=not insecure, ca_file=readable_file(ca_file, "--ca-file"),
        codecs=comma_list(codecs), srtp=srtp, rate_increase=steps[0],  # type: ignore[arg-type]  # click.Choice
        rate_interval=steps[1] if steps[1] is not None else interval, rate_max=steps[2], rate_quit=steps[3],
        connection_per_attempt=connection_per_attempt, trace_msg=trace_msg, headers=header_fields(headers, check=False),
        record_dir=record, ring=ring, register=register, identity_key=pem_text(identity[0], "--identity-key"),
        identity_x5u=identity[1], identity_attest=identity[2].upper(), refreshes=refresh[0],
        refresh_interval=refresh[1], method=request[0], body=request[1], content_type=request[2])
    try:
        config.validate()
    except ValueError as exc:
        _fail(str(exc))
    if not ray_address:  # a cluster's workers bind on their own machines
        check_source(config.source_ip, 0, stream=transport != "udp", flags="--local-ip", target=host)

    raise_open_files_limit()  # sockets per user, connection and call (worker processes inherit it)
    server = f"{format_host(host)}:{config.server_port}/{transport}"
    listening = None if register or scenario != "answer" else server
    view = LiveView(f"skinnysip load {scenario} {server}", calls=scenario in ("call", "answer"),
                    answering=scenario == "answer", listening=listening)
    ref: dict[str, Any] = {}
    sinks: list[Any] = [view]
    files: list[CsvSink | ErrorLogSink] = []  # sinks writing files, closed at the end
    def csv_sink(path: str) -> CsvSink:
        return CsvSink(path, incoming=scenario == "answer")

    for flag, path, make in (("--csv", csv_path, csv_sink), ("--trace-err", trace_err, ErrorLogSink)):
        if path is None:
            continue
        try:
            files.append(make(path))
        except OSError as exc:
            _fail(f"{flag}: cannot write {str(path)!r}: {exc.strerror or exc}")
    sinks += files
    if trace_msg is not None:  # each worker writes FILE.i: can the first be written?
        where = trace_msg if processes <= 1 and not ray_address else f"{trace_msg}.0"
        try:
            open(where, "w").close()  # noqa: SIM115 - a check; the run writes it
        except OSError as exc:
            _fail(f"--trace-msg: cannot write {where!r}: {exc.strerror or exc}")
    live_on = not quiet and not as_json and sys.stderr.isatty()
    if rate_file is not None:
        def rate_file_warning(text: str) -> None:
            if live_on:
                view.note = text
            else:
                print(f"warning: {text}", file=sys.stderr, flush=True)

        sinks.append(_rate_file_sink(rate_file, ref, rate_file_warning))
    if not live_on and not quiet:  # a log: a line every 10 s, so a long run is not silent
        sinks.append(ProgressLines(lambda line: print(line, file=sys.stderr, flush=True),
                                   answering=scenario == "answer", listening=listening))
    worker_totals: list[dict[str, Any]] | None = None
    loop_used = "asyncio"

    def on_monitor(monitor: Any) -> None:
        ref["monitor"] = monitor

    async def main() -> Any:
        nonlocal worker_totals, loop_used
        keys = _Keys(ref, view)
        live = None
        loop = asyncio.get_running_loop()
        loop_used = loops.loop_name(loop)

        interrupts = 0

        def interrupted() -> None:
            # the first Ctrl-C: no new attempts, the running ones end; the second: they are
            # cancelled (calls hang up); either way the summary follows. The third: out at once.
            nonlocal interrupts
            interrupts += 1
            monitor = ref.get("monitor")
            if interrupts == 1:
                if monitor is not None:
                    monitor.stop()
                view.note = "interrupted: no new attempts (Ctrl-C again to abort the running ones)"
            else:
                if monitor is not None:
                    monitor.abort()
                view.note = "aborting: the running attempts end now, calls hang up (Ctrl-C again to quit at once)"
                loop.remove_signal_handler(signal.SIGINT)

        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGINT, interrupted)
        if live_on:
            from rich.console import Console
            from rich.live import Live

            live = Live(view.render(), console=Console(stderr=True, **CONSOLE_OPTIONS), refresh_per_second=4,
                        transient=False)
            live.start()
            view.live = live
            keys.start()
        try:
            if processes > 1 or ray_address:
                from skinnysip.load.distributed import run_distributed

                monitor, worker_totals = await run_distributed(config, sinks, workers=max(1, processes),
                                                               address=ray_address, interval=interval,
                                                               on_monitor=on_monitor,
                                                               engine=engine,  # type: ignore[arg-type]
                                                               event_loop=event_loop)
                return monitor
            return await run_local(config, sinks, interval=interval, on_monitor=on_monitor)
        finally:
            keys.stop()
            if live is not None:
                live.stop()

    try:
        monitor = loops.run(main(), event_loop)
    except loops.EventLoopUnavailable as exc:
        _fail(f"--loop: {exc}")
    except KeyboardInterrupt:
        _fail("interrupted", EXIT_FAILURES)
    except Exception as exc:  # the server cannot be reached, Ray cannot start…: one line
        from skinnysip.load.distributed import WorkersFailed
        from skinnysip.net.sip_transport import SIPTransportError
        from skinnysip.phone.api import PhoneError

        reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
        unreachable = isinstance(exc, SIPTransportError | PhoneError | WorkersFailed)
        _fail(reason, EXIT_NO_ANSWER if unreachable else EXIT_USAGE)
    finally:
        for sink in files:
            sink.close()
    result = summary(monitor, config, workers=max(1, processes))
    result["eventLoop"] = loop_used
    # files that could not be written to the end (disk full…): the output asked for is incomplete
    result["warnings"] += [sink.error for sink in files if sink.error]
    worker_errors: list[str] = []
    if worker_totals is not None:
        result["workerTotals"] = worker_totals
        worker_errors = [w["error"] for w in worker_totals if w.get("error")]
    for warning in worker_errors + result["warnings"]:  # a worker's share is missing from the totals
        err_console.print(f"warning: {printable(warning)}", markup=False, highlight=False, soft_wrap=True)
    not_registered = result.get("notRegistered", 0)
    for refusal in result.get("registrationFailures", []):
        err_console.print(f"not registered: {printable(refusal)}", markup=False, highlight=False, soft_wrap=True)
    if not_registered > len(result.get("registrationFailures", [])):
        err_console.print(f"not registered: {not_registered - len(result['registrationFailures'])} more users",
                          markup=False, highlight=False)
    if result["malformedReceived"]:  # answers that did not count: the server's, not our failure to wait
        err_console.print(f"note: {result['malformedReceived']} malformed message(s) received and dropped (RFC 3261 "
                          f"§18.1.2); the last: {printable(result['lastMalformed'] or '')}", markup=False, highlight=False,
                          soft_wrap=True)
    dog = result["watchdog"]
    if dog["minor"] or dog["major"]:  # SIPp's watchdog tripped: the numbers are this process's limit
        err_console.print(f"note: this load generator's event loop ran late {dog['minor'] + dog['major']} times "
                          f"(SIPp's watchdog: {dog['minor']} minor, {dog['major']} major; the longest "
                          f"{dog['maxLagMs']:g} ms late): attempts started late and response times include "
                          "its delay — lower the rate or use --processes", markup=False, highlight=False,
                          soft_wrap=True)
    elif (busy := busy_note(dog)) is not None:
        err_console.print(busy, markup=False, highlight=False, soft_wrap=True)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        from rich.console import Console

        if not live_on and not quiet:
            Console(**CONSOLE_OPTIONS).print(view.render())
        rt = result["responseTimeMs"]
        times = (f"p50 {rt['p50']} ms, p99 {rt['p99']} ms" if rt.get("p50") is not None
                 else "no response times")  # nothing was answered
        why = top_statuses(result["failedByStatus"])
        for step in result["rateSteps"]:
            srt = step["responseTimeMs"]
            step_times = f"p50 {srt['p50']} ms, p99 {srt['p99']} ms" if srt["p50"] is not None else "no response times"
            click.echo(f"  step {step['rate']:g}/s for {step['elapsedMs'] / 1000:g} s: {step['attempted']} attempted "
                       f"({step['attemptRate']}/s), {step['successful']} successful, {step['failed']} failed; "
                       f"{step_times}; {step['retransmissions']} retransmissions")
        if result["stoppedAtRateMax"]:
            click.echo("  the next step would pass --rate-max: no new attempts after it")
        if result["stopped"] == "abort":
            click.echo("  aborted: the attempts still running were cancelled (counted as 'aborted')")
        pdd = result.get("alertingTimeMs")
        if pdd and pdd["count"]:
            click.echo(f"  post-dial delay (INVITE → first 18x) p50 {pdd['p50']} ms, p99 {pdd['p99']} ms "
                       f"of {pdd['count']} calls alerted")
        if scenario == "answer" and listening:
            click.echo(f"  listened on {listening}; each call sent there is an attempt")
        elif scenario == "answer":
            click.echo(f"  {result['registered']} users registered, {not_registered} not; each call brought to "
                       "one is an attempt")
        click.echo(f"{result['successful']} successful, {result['failed']} failed{f' ({why})' if why else ''} "
                   f"of {result['attempted']} ({result['rate']}/s; {times}; {result['retransmissions']} "
                   "retransmissions)")
    exceeded = max_failures_exceeded(max_failures, result["failed"], result["attempted"]) or not_registered > 0
    raise exit_with(EXIT_USAGE if result["warnings"] else EXIT_FAILURES if exceeded or worker_errors else EXIT_OK)


def _command(scenario: str, doc: str) -> click.Command:
    @argument("host", help="The server every request goes to: HOST, HOST:PORT, [IPv6]:PORT, "
              "sip:HOST:PORT;transport=tcp, sips:HOST or a WebSocket URL ws://HOST:PORT/PATH, wss://… "
              "(sip:bob@HOST: bob is the target, as --to).")
    @option("--port", "-p", type=click.IntRange(1, 65535), help="Server port (5060; TLS 5061; WS 80, WSS 443).")
    @option("--transport", "-t", show_default=False,
            help="udp, tcp, tls, ws or wss (SIP over WebSocket) [default: from HOST, else udp].")
    @option("--domain", help="Domain of the URIs (default: HOST[:PORT]).")
    @option("--user", "-u", help="User name (From/To, digest).")
    @option("--password", help="Digest password (or $SKINNYSIP_PASSWORD).")
    @option("--users", help="SIPp -inf style file: [SEQUENTIAL|RANDOM|USER[,PRINTF=N…]] then "
            "user;password[;auth_user] or user;domain;[authentication username=U password=P] lines.")
    @option("--to", help="Target: bob, bob@host or a SIP URI (call, message); [fieldN]: field N (0-based) of "
            "the attempt's --users line, as in SIPp (alice;pw;alice;bob with --to '[field3]').")
    @option("--rate", "-r", default=10.0, type=FloatRange(min=0.001), help="Attempts started per second (SIPp -r).")
    @option("--limit", "-l", default=100, type=click.IntRange(min=1), help="Attempts in progress at most (SIPp -l).")
    @option("--count", "-m", type=click.IntRange(min=1), help="Attempts in all (SIPp -m).")
    @option("--duration", type=FloatRange(min=0.001), help="Seconds to start attempts for (default 10 without -m).")
    @option("--ramp-up", default=0.0, type=FloatRange(min=0.0),
            help="Seconds over which the rate grows from 5 % to -r.")
    @option("--hold", type=FloatRange(min=0.0), help="Seconds a call stays up with media [default: 5; answer: "
            "until the caller hangs up, --hold S: at most S]")
    @option("--timeout", default=32000, type=click.IntRange(min=1), help="Longest transaction, ms (Timer B/F: 32000).")
    @option("--expires", default=60, type=click.IntRange(min=0), help="REGISTER expiry, seconds.")
    @option("--unregister/--no-unregister", default=True, help="Remove each binding after registering.")
    @option("--refreshes", default=0, type=click.IntRange(min=0, max=10_000), metavar="N",
            help="register: refresh each binding N times before the unregister, with the credentials cached "
            "for its Call-ID (RFC 3261 §10.2.4, §22.3), as phones keep a registration.")
    @option("--refresh-interval", type=FloatRange(min=0.001, max=86_400.0), metavar="S",
            help="register: seconds between refreshes [default: half the expiry granted].")
    @option("--text", default="skinnysip load", help="MESSAGE body.")
    @option("--method", metavar="METHOD", help="request: the method each attempt sends (SUBSCRIBE, NOTIFY, INFO, "
            "PUBLISH, an extension…; not INVITE, ACK, CANCEL or REGISTER), with --header fields.")
    @option("--body", metavar="TEXT", help="request: the body of each request.")
    @option("--content-type", metavar="TYPE", help="request: Content-Type of --body [default: text/plain].")
    @option("--local-ip", metavar="IP", help="Send from this address of this host (SIPp -i): signalling and "
            "calls' media [default: the one the routing table picks for HOST].")
    @option("--local-ports", help="Local UDP port range FIRST-LAST.")
    @option("--rtp-ports", metavar="FIRST-LAST", help="Calls: the range their RTP/RTCP port pairs are taken from "
            "(baresip rtp_ports).")
    @option("--script", help="user scenario: a Python file with async def scenario(phone, index).")
    @option("--source", default="tone:440", help="What calls send: tone:HZ, silence, echo (what they hear), rtp-echo (each payload back as it came, as SIPp -rtp_echo) or a WAV file.")
    @option("--register/--no-register", default=True, help="answer: register the --users at HOST "
            "(--no-register: listen on HOST:PORT and answer every call sent there, as sipp -sn uas).")
    @option("--ring", default=0.0, type=FloatRange(min=0.0), help="answer: seconds of ringing (after our 180) "
            "before the 200.")
    @option("--record", metavar="DIR", help="Calls: each call's WAV recordings there (callN-rx.wav, callN-tx.wav; "
            "with --processes N in DIR/0 … DIR/N-1); mind the disk on long runs.")
    @option("--codecs", metavar="LIST", help="Audio codecs calls offer and accept, in order, e.g. PCMA,PCMU "
            "[default: all available, wideband first].")
    @option("--srtp", default="off", type=click.Choice(["off", "optional", "mandatory", "dtls"]),
            help="Calls: SRTP with SDES keys (optional: RTP/AVP + a=crypto; mandatory: RTP/SAVP) or DTLS-SRTP "
            "(dtls: UDP/TLS/RTP/SAVP, RFC 5764) [default: off].")
    @option("--identity-key", metavar="PEM", help="Calls: sign each INVITE (STIR/SHAKEN, RFC 8224/8588: Date and "
            "Identity, ES256) with this EC P-256 private key; with --identity-x5u.")
    @option("--identity-x5u", metavar="URL", help="The http(s) URL of --identity-key's certificate (x5u, info).")
    @option("--attest", default="A", help="SHAKEN attestation of the signed INVITEs: A, B or C.")
    @option("--csv", "csv_path", help="Per-interval statistics (SIPp -trace_stat columns).")
    @option("--trace-err", help="Write what failed attempts were (status, the request sent, the answer; the first "
            "20 an interval, 1000 in all), as SIPp -trace_err.")
    @option("--trace-msg", help="Write every SIP message sent and received, as SIPp -trace_msg (at most 256 MiB; "
            "with --processes N worker i writes FILE.i).")
    @option("--json", "as_json", is_flag=True, help="Print the final summary as JSON.")
    @option("--interval", default=1.0, type=FloatRange(min=0.05), help="Seconds between statistics rows.")
    @option("--max-failures", default="0", callback=_check_max_failures,
            help="Failures allowed before the exit status is 1: N or P%.")
    @option("--processes", default=1, type=click.IntRange(1, 1024), help="Worker processes, each with its share of "
            "the run.")
    @option("--engine", help="What runs the workers: processes (this machine; the default) or ray (the "
            "'distributed' extra; the default with --ray-address).")
    @option("--ray-address", help="Join a Ray cluster (auto, ray://host:10001).")
    @option("--loop", "event_loop", default="auto", type=click.Choice(EVENT_LOOPS), metavar="|".join(EVENT_LOOPS),
            help="The event loop of this process and its worker processes: uvloop (libuv: the loop's own work "
            "in C), asyncio, or auto (uvloop when installed).")
    @option("--rate-file", help="A file holding the rate; re-read every interval.")
    @option("--rate-increase", default=0.0, type=FloatRange(min=0.0),
            help="Attempts/s added to the rate every --rate-interval (SIPp -rate_increase).")
    @option("--rate-interval", type=FloatRange(min=0.05),
            help="Seconds between rate steps [default: --interval] (SIPp -rate_interval).")
    @option("--rate-max", type=FloatRange(min=0.001), help="With --rate-increase: the last step's rate; the "
            "step that would pass it stops new attempts (SIPp -rate_max).")
    @option("--no-rate-quit", is_flag=True, help="With --rate-max: keep going at it (needs -m or --duration) "
            "(SIPp -no_rate_quit).")
    @option("--connection-per-attempt", is_flag=True, help="Each attempt on a new connection (TCP/TLS) or UDP "
            "socket, closed after it (SIPp -t tn / -t ln / -t un); options, register, message.")
    @option("--header", "-H", "headers", metavar="'NAME: VALUE'", multiple=True,
            help="A header field added to each attempt's request (repeatable), as a SIPp scenario's own lines or "
            "sipsak -j: X-…, P-Asserted-Identity, Route…; a User-Agent replaces ours; [fieldN] as in --to.")
    @option("--quiet", "-q", is_flag=True, help="No live view or table.")
    @option("--insecure", "-k", is_flag=True, help="TLS: do not check the server certificate.")
    @option("--ca-file", help="TLS: CA certificates to check the server with.")
    def command(
        host: str, port: int | None, transport: str | None, domain: str | None, user: str | None,
        password: str | None, users: str | None, to: str | None, rate: float, limit: int, count: int | None,
        duration: float | None, ramp_up: float, hold: float | None, timeout: int, expires: int, unregister: bool,
        refreshes: int, refresh_interval: float | None, text: str, method: str | None, body: str | None,
        content_type: str | None, local_ip: str | None, local_ports: str | None,
        rtp_ports: str | None,
        script: str | None, source: str, register: bool,
        ring: float, record: str | None, codecs: str | None, srtp: str,
        identity_key: str | None, identity_x5u: str | None, attest: str, csv_path: str | None,
        trace_err: str | None, trace_msg: str | None, as_json: bool, interval: float, max_failures: str,
        processes: int,
        engine: str | None, ray_address: str | None, event_loop: str, rate_file: str | None, rate_increase: float,
        rate_interval: float | None, rate_max: float | None, no_rate_quit: bool, connection_per_attempt: bool,
        headers: tuple[str, ...], quiet: bool, insecure: bool, ca_file: str | None,
    ) -> None:
        if scenario == "user" and script is None:
            _fail("the user scenario needs --script FILE.py")
        _run(scenario, host, port, transport, domain, user, password, users, to, rate, limit, count, duration,
             ramp_up, hold, timeout, expires, unregister, text, local_ports, script, source, codecs, csv_path, trace_err,
             as_json, interval, max_failures, processes, engine, ray_address, rate_file, quiet, insecure, ca_file,
             (rate_increase, rate_interval, rate_max, not no_rate_quit), connection_per_attempt, trace_msg,
             rtp_ports, headers, record, ring, register, event_loop, srtp, (identity_key, identity_x5u, attest),
             (refreshes, refresh_interval), local_ip, (method, body, content_type))

    return app.command(scenario, help=doc, epilog=EPILOG)(command)


EPILOG = ("While running: keys + - (rate ±1/s), * / (±10/s), p (pause/resume), q (no new attempts) on a terminal; "
          "--rate-file FILE is re-read every interval; --rate-increase N steps the rate up by N every "
          "--rate-interval up to --rate-max, to find a server's capacity; the first Ctrl-C stops new attempts "
          "and prints the summary. Exit status: 0 failures within --max-failures, 1 beyond (or a worker failed), 2 bad arguments or a local "
          "error, 3 server unreachable. See docs/load.md.")
_command("options", "OPTIONS, one transaction per attempt.")
_command("register", "REGISTER with digest (RFC 3261 §10, §22), then unregister.")
_command("call", "INVITE (digest) → 200 → ACK → media both ways with RTCP for --hold → BYE.")
_command("message", "MESSAGE (RFC 3428) to --to, digest when challenged.")
_command("request", "One request of --method (SUBSCRIBE, NOTIFY, INFO, PUBLISH, an extension…) with --header fields "
         "and a --body, to --to (else the domain); digest when challenged.")
_command("user", "Your scenario: --script FILE.py with async def scenario(phone, index).")
_command("answer", "The called side (SIPp -sn uas behind a registration): every --users user registers (-r per "
         "second), each call to one is answered (180, then 200 with SDP; --ring S later) with media both ways and "
         "RTCP until the caller's BYE (--hold S: ours after S); -m calls, --duration or q/Ctrl-C end it (an hour at "
         "most); then each user unregisters. --no-register: listen on HOST:PORT and answer every call sent there "
         "(sipp -sn uas).")
