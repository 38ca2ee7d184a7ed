"""Twinkle (Debian ``twinkle-console`` 1.10) as another real far-end phone for the tests.

Each instance runs in its own HOME: ``~/.twinkle/twinkle.sys`` (SIP and RTP ports, sound
devices) and ``~/.twinkle/NAME.cfg`` (the user profile, the console's only argument), no
registration (direct calls to ``sip:NAME@127.0.0.1:PORT``). Twinkle finds no local address
in a sandbox (it prints ``Local IP: 255.255.255.255``), so the profile makes it put
127.0.0.1 in its Contact, Via and SDP (``use_nat_public_ip``). Sound goes through ALSA
devices of a test ``~/.asoundrc``: the speaker is the ``file`` plugin writing what Twinkle
plays to ``speaker.raw`` (16-bit little-endian at the call's rate: 8000 Hz for G.711), the
microphone and the ringtone ALSA's ``null`` (Twinkle then sends next to no RTP; its capture
has no clock); no ringback is played. Commands (``call``, ``answer``, ``hold``,
``retrieve``, ``dtmf``, ``transfer``, ``message``, ``bye``) go to its stdin; what it prints
is read from stdout. Always stopped by its context manager.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from peertools import ConsolePeer, free_even_port_run, free_port, require

ASOUNDRC = """pcm.twinkle_speaker {{
    type file
    slave.pcm "null"
    file "{workdir}/speaker.raw"
    format "raw"
}}
"""


@dataclass
class Twinkle(ConsolePeer):
    """A running twinkle-console: ``uri`` (where to call it), ``sip_port``, ``workdir``,
    ``speaker`` (the raw file its speaker writes), ``lines`` (its stdout, prompts stripped);
    ``command``/``wait_line`` from :class:`~peertools.ConsolePeer`."""

    PROMPT = "Twinkle> "
    NAME = "twinkle"
    WAIT = 10.0

    uri: str
    sip_port: int
    workdir: Path
    speaker: Path
    proc: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    def sip_log(self) -> str:
        """Twinkle's log so far (every SIP message it sent and received)."""
        log = self.workdir / ".twinkle" / "twinkle.log"
        return log.read_text(errors="replace") if log.exists() else ""

    def diagnosis(self) -> str:
        """What Twinkle did, for a failure message: the headline of each entry of its log (a
        SIP message's first line, a report's first line) and, when ``gdb`` is installed, the
        stack of each of its threads (where it is stuck, if it is)."""
        headlines = []
        for entry in self.sip_log().split("\n+++ ")[1:]:
            lines = entry.splitlines()
            body = [line for line in lines[1:3] if line and line != "---"]
            headlines.append(f"{lines[0]} | {' | '.join(body)}")
        text = "Twinkle's log:\n" + "\n".join(headlines[-150:])
        gdb = shutil.which("gdb")
        if gdb and self.proc.returncode is None:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                stacks = subprocess.run([gdb, "-p", str(self.proc.pid), "-batch", "-ex", "thread apply all bt"],
                                        capture_output=True, text=True, timeout=30, check=False).stdout
                text += "\nTwinkle's threads (innermost call first):\n" + "\n".join(_stacks(stacks))
        return text


def _stacks(gdb_output: str) -> list[str]:
    """gdb's ``thread apply all bt`` as one line per thread: the function names of its frames."""
    threads: list[str] = []
    for line in gdb_output.splitlines():
        if line.startswith("Thread "):
            threads.append(line.split(" (")[0] + ":")
        elif threads and (frame := re.match(r"#\d+\s+(?:0x[0-9a-f]+ in )?([^ (]+)", line)):
            threads[-1] += " " + frame.group(1)
    return threads


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
        # no ringback: it would go to the speaker file (before the call's audio), and its
        # tone thread is the one Twinkle must stop on our 200 before it ACKs
        "play_ringback=no\n"
        f"sip_udp_port={sip_port}\nsip_port={sip_port}\nrtp_port={free_even_port_run(4)}\nstart_hidden=yes\n")
    (workdir / ".twinkle" / f"{name}.cfg").write_text(
        f"user_name={name}\nuser_domain=127.0.0.1\nregister_at_startup=no\n"
        "use_nat_public_ip=yes\nnat_public_ip=127.0.0.1\nask_user_to_refer=no\n"
        # no presence PUBLISH or MWI SUBSCRIBE to the user's domain: that is a DNS name in the
        # lab tests (skinnysip.test), and looking it up would send queries off this machine
        "pres_publish_startup=no\nmwi_sollicited=no\n" + profile)
    env = {**os.environ, "HOME": str(workdir)}
    proc = await asyncio.create_subprocess_exec(binary, f"{name}.cfg", stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                                                env=env, cwd=workdir, start_new_session=True, limit=1 << 20)
    peer = Twinkle(f"sip:{name}@127.0.0.1:{sip_port}", sip_port, workdir, workdir / "speaker.raw", proc)
    peer.start_reading()
    try:
        await peer.wait_line(r"^Local IP:", 10.0)
        await asyncio.sleep(0.3)  # its transaction layer starts after the banner
        yield peer
    finally:
        await peer.stop(("quit",), workdir)
