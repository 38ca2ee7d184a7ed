"""baresip (Debian ``baresip`` 1.0) as a real far-end phone for the tests.

Each instance runs headless in its own config directory: account from the arguments,
``aufile`` as the microphone (a WAV file the test made), ``sndfile`` recording what it
sends and receives (``dump-*-enc.wav``/``-dec.wav`` in ``record_dir``), ``aubridge`` as the
"speaker", and ``ctrl_tcp`` so the test can give commands (dial, accept, hangup, hold…)
and read baresip's events (CALL_INCOMING, CALL_ESTABLISHED, CALL_CLOSED, REGISTER_OK…) as
JSON netstrings. Always stopped by its context manager.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import netns
from peertools import free_port, require
from skinnysip.rtp.tones import sine

# baresip 1.0 reads the accounts when ``account`` loads: what an account names (``mediaenc=srtp``,
# codecs) must be loaded before it.
MODULES = ["stdio", "menu", "srtp", "dtls_srtp", "g711", "aufile", "sndfile", "aubridge", "ctrl_tcp", "contact", "account"]
#: optional codec modules a test may ask for (baresip 1.0: ``g722.so``, ``opus.so``); without them
#: baresip speaks G.711 only, as the tests written before them expect; and ``ice`` (its full ICE
#: agent, used by an account with ``medianat=ice``)
CODEC_MODULES = ("g722", "opus", "ice")


def write_tone_wav(path: Path, freq: float, seconds: float = 200.0, rate: int = 8000, channels: int = 1) -> Path:
    """A 16-bit WAV of a sine (what baresip will send), the same on each of ``channels``.
    baresip 1.0's aufile does not loop: at the end of the file it reports AUDIO_ERROR and hangs
    up, so the file outlasts any test call."""
    import wave

    samples = np.repeat(sine(freq, seconds, rate=rate, amplitude=0.4).astype(np.int16), channels)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return path


class BaresipDidNotStart(RuntimeError):
    """baresip exited (or never listened) before its ctrl_tcp port accepted a connection."""


def sip_listen_port() -> int:
    """A port for baresip's ``sip_listen``: baresip 1.0 binds it for UDP and TCP and the next
    port for its TLS listener, so all three must be free."""
    for _ in range(50):
        port = free_port(socket.SOCK_DGRAM)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for baresip")


def _free_ports() -> tuple[int, int]:
    """``(sip_listen, ctrl_tcp)`` ports: the control port is none of the three SIP binds."""
    sip_port = sip_listen_port()
    for _ in range(50):
        ctrl_port = free_port(socket.SOCK_STREAM)
        if ctrl_port not in (sip_port, sip_port + 1):
            return sip_port, ctrl_port
    raise RuntimeError("no free control port for baresip")


@dataclass
class Baresip:
    """A running baresip: ``aor``, ``sip_port`` (its listening port), ``record_dir``,
    ``events`` (every ctrl_tcp event dict, in order), ``log`` (its stdout file)."""

    aor: str
    sip_port: int
    ctrl_port: int
    record_dir: Path
    log: Path
    events: list[dict[str, Any]] = field(default_factory=list)
    _reader: asyncio.StreamReader | None = None
    host: str = "127.0.0.1"
    netns: str | None = None
    _writer: asyncio.StreamWriter | None = None
    _responses: dict[str, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    pid: int = 0  # its process (a new session: the group has the same id)
    _task: asyncio.Task[None] | None = None
    _token: int = 0

    async def connect(self, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
        """Connect to ctrl_tcp; :class:`BaresipDidNotStart` when ``proc`` exits first or the
        port stays closed for ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with netns.entered(self.netns) if self.netns else contextlib.nullcontext():
                    self._reader, self._writer = await asyncio.open_connection(self.host, self.ctrl_port)
                break
            except OSError as exc:
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = self.log.read_text(errors="replace")[-1500:] if self.log.exists() else ""
                    state = f"exited with {proc.returncode}" if proc.poll() is not None else "still running"
                    raise BaresipDidNotStart(f"baresip ({state}) never opened ctrl_tcp {self.ctrl_port} "
                                             f"(sip {self.sip_port}): {exc}; its log ends:\n{tail}") from exc
                await asyncio.sleep(0.1)
        self._task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        assert self._reader is not None
        while True:
            try:
                length = await self._reader.readuntil(b":")
                body = await self._reader.readexactly(int(length[:-1]))
                await self._reader.readexactly(1)  # ","
            except (asyncio.IncompleteReadError, ValueError, OSError):
                return
            try:
                message = json.loads(body)
            except json.JSONDecodeError:
                continue
            if message.get("response"):
                future = self._responses.pop(str(message.get("token")), None)
                if future is not None and not future.done():
                    future.set_result(message)
            elif message.get("event"):
                self.events.append(message)

    async def command(self, command: str, params: str = "", timeout: float = 10.0) -> dict[str, Any]:
        """Run a baresip command (``dial``, ``accept``, ``hangup``, ``hold``, ``resume``,
        ``sndcode``…) and return its response dict."""
        assert self._writer is not None
        self._token += 1
        token = str(self._token)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._responses[token] = future
        body = json.dumps({"command": command, "params": params, "token": token}).encode()
        self._writer.write(str(len(body)).encode() + b":" + body + b",")
        await self._writer.drain()
        return await asyncio.wait_for(future, timeout)

    async def wait_event(self, kind: str, timeout: float = 15.0, after: int = 0) -> dict[str, Any]:
        """The first event of type ``kind`` (e.g. ``CALL_ESTABLISHED``) at index ≥ ``after``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events[after:]:
                if event.get("type") == kind:
                    return event
            await asyncio.sleep(0.05)
        seen = [e.get("type") for e in self.events]
        raise AssertionError(f"baresip: no {kind} event within {timeout} s (saw {seen})")

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """baresip stopped (SIGSTOP) while the block runs: its sockets stay, nothing is sent or
        answered — a phone that hangs or lost its network without a word."""
        os.kill(self.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.pid, signal.SIGCONT)

    def event_types(self) -> list[str]:
        return [str(e.get("type")) for e in self.events]

    def recordings(self) -> dict[str, Path]:
        """``{"enc": path, "dec": path}`` of the newest sndfile dumps (sent, received)."""
        out: dict[str, Path] = {}
        for kind in ("enc", "dec"):
            files = sorted(self.record_dir.glob(f"dump-*-{kind}.wav"), key=lambda p: p.stat().st_mtime)
            if files:
                out[kind] = files[-1]
        return out


@contextlib.asynccontextmanager
async def baresip(
    user: str,
    password: str,
    registrar: str,
    *,
    transport: str = "udp",
    tone_hz: float = 440.0,
    answermode: str = "auto",
    register: bool = True,
    extra_account: str = "",
    regint: int = 60,
    contact: str | None = None,
    codec_modules: tuple[str, ...] = (),
    tone_channels: int = 1,
    host: str = "127.0.0.1",
    netns_name: str | None = None,
    instance: bool = False,
    presence: bool = False,
    pubint: int = 0,
    watch: tuple[str, ...] = (),
) -> AsyncIterator[Baresip]:
    """Start baresip for ``user`` at ``registrar`` (``host:port``), sending a ``tone_hz``
    sine, answering calls by itself (``answermode=auto``) unless told ``manual``.
    ``contact``: a URI made baresip's current contact (its ``message`` command sends there).
    ``codec_modules``: more of :data:`CODEC_MODULES` to load (e.g. ``("g722", "opus")``);
    restrict what baresip offers and answers with ``extra_account="audio_codecs=G722/16000/1"``
    (baresip names a codec by its audio rate: ``G722/16000/1``, ``opus/48000/2``).
    ``tone_channels``: channels of the tone file; baresip 1.0's aufile must match the codec's
    (2 for its ``opus/48000/2``), and its recordings then have as many.
    ``host``: its SIP, media and control address; ``netns_name``: a namespace of
    :mod:`netns` to run it in (its ports are then free there whatever this machine uses).
    ``instance``: load its ``uuid`` module before ``account``, so its registrations carry a
    ``+sip.instance`` (which ``extra_account="sipnat=outbound"``, RFC 5626, needs).
    ``presence``: load baresip's ``presence`` module (after ``account``: it takes the accounts
    there are when it loads); with ``pubint`` > 0 the account PUBLISHes its PIDF status
    (RFC 3903, ``Expires: pubint``; ``open`` once registered; the ``presence_online`` and
    ``presence_offline`` commands change it); ``watch``: URIs it SUBSCRIBEs to (Event:
    presence, through its outbound proxy), put in its contacts with ``;presence=p2p``
    (see presence_peer.py)."""
    unknown = set(codec_modules) - set(CODEC_MODULES)
    if unknown:
        raise ValueError(f"codec modules {sorted(unknown)}: only {CODEC_MODULES}")
    modules = MODULES[:MODULES.index("g711") + 1] + list(codec_modules) + MODULES[MODULES.index("g711") + 1:]
    if instance:
        modules.insert(modules.index("account"), "uuid")
    if presence:
        modules.append("presence")
    binary = require("baresip")
    workdir = Path(tempfile.mkdtemp(prefix="skinnysip-baresip-"))
    record_dir = workdir / "rec"
    record_dir.mkdir()
    tone = write_tone_wav(workdir / "tone.wav", tone_hz, channels=tone_channels)
    domain = registrar.split(":")[0]
    aor = f"sip:{user}@skinnysip.test"
    params = [f"auth_pass={password}", f"answermode={answermode}",
              f'outbound="sip:{registrar};transport={transport}"', f"regint={regint if register else 0}"]
    if pubint:
        params.append(f"pubint={pubint}")
    if extra_account:
        params.append(extra_account)
    (workdir / "accounts").write_text(f"<{aor};transport={transport}>;" + ";".join(params) + "\n")
    (workdir / "contacts").write_text((f'"peer" <{contact}>\n' if contact else "")
                                      + "".join(f'"{uri}" <{uri}>;presence=p2p\n' for uri in watch))
    if contact:
        (workdir / "current_contact").write_text(contact + "\n")
    log = workdir / "baresip.log"
    proc: subprocess.Popen[bytes] | None = None
    peer: Baresip | None = None
    try:
        # a port picked free can be taken before baresip binds it (by any process on the machine):
        # baresip then exits, and it is started again on other ports, at most three times
        for attempt in range(3):
            sip_port, ctrl_port = _free_ports()
            _write_config(workdir, sip_port=sip_port, ctrl_port=ctrl_port, tone=tone, record_dir=record_dir,
                          modules=modules, dns=f"{domain}:53", host=host)
            prefix = netns.ns_exec(netns_name) if netns_name else []
            with open(log, "wb") as out:
                proc = subprocess.Popen([*prefix, binary, "-f", str(workdir), "-t", "600"], stdout=out,
                                        stderr=subprocess.STDOUT, stdin=subprocess.PIPE, start_new_session=True)
            peer = Baresip(aor, sip_port, ctrl_port, record_dir, log, host=host, netns=netns_name)
            try:
                await peer.connect(proc)
                break
            except BaresipDidNotStart:
                _stop(proc)
                proc = None
                if attempt == 2:
                    raise
        assert peer is not None and proc is not None
        peer.pid = proc.pid
        yield peer
    finally:
        if peer is not None and proc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(peer.command("quit"), 2)
            if peer._writer is not None:
                peer._writer.close()
            if peer._task is not None:
                peer._task.cancel()
        if proc is not None:
            _stop(proc)
        if not os.environ.get("SKINNYSIP_KEEP_PEERS"):
            shutil.rmtree(workdir, ignore_errors=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Wait up to 3 s for ``proc`` to end by itself, then kill it."""
    try:
        proc.wait(timeout=3)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
    if proc.stdin:
        proc.stdin.close()


def _write_config(workdir: Path, *, sip_port: int, ctrl_port: int, tone: Path, record_dir: Path,
                  modules: list[str], dns: str, host: str = "127.0.0.1") -> None:
    # net_interface 127.0.0.1: baresip puts 127.0.0.1 in its SDP and sends media only there, never to
    # the machine's other addresses (its config takes no trailing comments)
    config = [
        "poll_method epoll",
        f"net_interface {host}",
        f"sip_listen {host}:{sip_port}",
        "sip_trans_bsize 128",
        f"audio_source aufile,{tone}",
        "audio_player aubridge,speaker",
        "audio_alert aubridge,alert",
        "audio_srate 8000",
        "audio_channels 1",
        "ausrc_srate 8000",
        "auplay_srate 8000",
        "rtp_stats yes",
        "jitter_buffer_delay 1-10",
        f"snd_path {record_dir}",
        f"ctrl_tcp_listen {host}:{ctrl_port}",
        "module_path /usr/lib/baresip/modules",
        *[f"module {m}.so" for m in modules],
        f"dns_server {dns}",
    ]
    (workdir / "config").write_text("\n".join(config) + "\n")
