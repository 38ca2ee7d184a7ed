"""Twinkle (Debian ``twinkle-console`` 1.10) as another real far-end phone for the tests.

Each instance runs in its own HOME: ``~/.twinkle/twinkle.sys`` (SIP and RTP ports, sound
devices) and ``~/.twinkle/NAME.cfg`` (the user profile, the console's only argument), no
registration (direct calls to ``sip:NAME@127.0.0.1:PORT``). Twinkle finds no local address
in a sandbox (it prints ``Local IP: 255.255.255.255``), so the profile makes it put
127.0.0.1 in its Contact, Via and SDP (``use_nat_public_ip``). Sound goes through ALSA
devices of a test ``~/.asoundrc``: the speaker is the ``file`` plugin writing what Twinkle
plays to ``speaker.raw`` (16-bit little-endian at the call's rate: 8000 Hz for G.711), the
microphone and the ringtone ALSA's ``null`` (Twinkle then sends next to no RTP; its capture
has no clock). Commands (``call``, ``answer``, ``hold``, ``retrieve``, ``dtmf``,
``transfer``, ``message``, ``bye``) go to its stdin; what it prints is read from stdout.
Always stopped by its context manager.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from peertools import free_port, require

ASOUNDRC = """pcm.twinkle_speaker {{
    type file
    slave.pcm "null"
    file "{workdir}/speaker.raw"
    format "raw"
}}
"""


@dataclass
class Twinkle:
    """A running twinkle-console: ``uri`` (where to call it), ``sip_port``, ``workdir``,
    ``speaker`` (the raw file its speaker writes), ``lines`` (its stdout, prompts stripped)."""

    uri: str
    sip_port: int
    workdir: Path
    speaker: Path
    proc: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while True:
            try:
                raw = await self.proc.stdout.readline()
            except (ValueError, OSError):  # a line over the limit, or the pipe broke
                return
            if not raw:
                return
            line = raw.decode(errors="replace").replace("Twinkle> ", "").strip()
            if line:
                self.lines.append(line)

    async def command(self, text: str) -> None:
        """Write one command line on Twinkle's stdin."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode() + b"\n")
        await self.proc.stdin.drain()

    async def wait_line(self, pattern: str, timeout: float = 10.0, after: int = 0) -> re.Match[str]:
        """The first stdout line at index ≥ ``after`` matching the regex ``pattern``."""
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
        raise AssertionError(f"twinkle: no line matching {pattern!r} within {timeout} s; "
                             f"stdout was {self.lines[-20:]}")

    def sip_log(self) -> str:
        """Twinkle's log so far (every SIP message it sent and received)."""
        log = self.workdir / ".twinkle" / "twinkle.log"
        return log.read_text(errors="replace") if log.exists() else ""


def _free_rtp_port() -> int:
    """An even UDP port with the next three free (Twinkle's two lines, RTP and RTCP each)."""
    for _ in range(100):
        port = free_port(socket.SOCK_DGRAM)
        port -= port % 2
        socks = []
        try:
            for offset in range(4):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", port + offset))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        return port
    raise RuntimeError("no free RTP port range found")


@contextlib.asynccontextmanager
async def twinkle(name: str = "twinkle", *, profile: str = "") -> AsyncIterator[Twinkle]:
    """Start twinkle-console as user ``name`` listening on a free UDP/TCP port of 127.0.0.1;
    ``profile``: more ``key=value`` lines of its user profile (``hold_variant=rfc2543``,
    ``ext_100rel=required``, ``dtmf_transport=info``…). Waits until it prints its prompt."""
    binary = require("twinkle-console")
    workdir = Path(tempfile.mkdtemp(prefix="skinnysip-twinkle-"))
    (workdir / ".twinkle").mkdir()
    sip_port = free_port(socket.SOCK_DGRAM)
    (workdir / ".asoundrc").write_text(ASOUNDRC.format(workdir=workdir))
    (workdir / ".twinkle" / "twinkle.sys").write_text(
        "dev_ringtone=alsa:null\ndev_speaker=alsa:twinkle_speaker\ndev_mic=alsa:null\n"
        f"sip_udp_port={sip_port}\nsip_port={sip_port}\nrtp_port={_free_rtp_port()}\nstart_hidden=yes\n")
    (workdir / ".twinkle" / f"{name}.cfg").write_text(
        f"user_name={name}\nuser_domain=127.0.0.1\nregister_at_startup=no\n"
        "use_nat_public_ip=yes\nnat_public_ip=127.0.0.1\nask_user_to_refer=no\n" + profile)
    env = {**os.environ, "HOME": str(workdir)}
    proc = await asyncio.create_subprocess_exec(binary, f"{name}.cfg", stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                                                env=env, cwd=workdir, start_new_session=True, limit=1 << 20)
    peer = Twinkle(f"sip:{name}@127.0.0.1:{sip_port}", sip_port, workdir, workdir / "speaker.raw", proc)
    peer._task = asyncio.get_running_loop().create_task(peer._read())
    try:
        await peer.wait_line(r"^Local IP:", 10.0)
        await asyncio.sleep(0.3)  # its transaction layer starts after the banner
        yield peer
    finally:
        with contextlib.suppress(Exception):
            await peer.command("quit")
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await asyncio.wait_for(proc.wait(), 5)
        if proc.stdin is not None:
            proc.stdin.close()
        if peer._task is not None:
            peer._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await peer._task
        if not os.environ.get("SKINNYSIP_KEEP_PEERS"):
            shutil.rmtree(workdir, ignore_errors=True)
