"""linphonec (Debian ``linphone-cli`` 5.1, liblinphone 5.1.65) as a second real far-end phone.

It answers SHA-256 digest challenges (RFC 7616), which baresip 1.0 and SIPp 3.6 cannot.

Each instance runs in its own work directory (also its ``HOME``) with a generated config:
one account registering over UDP to the registrar, SIP bound to ``127.0.0.1`` on a free
port (no TCP/TLS listeners), audio RTP on a free port, and files instead of a sound card
(``soundcard use files``, ``play TONE.wav``, ``record FILE.wav``). Commands go on stdin
(``call <uri>``, ``answer``, ``terminate``, ``status register``, ``quit``); the state lines
it prints on stdout (``Call 1 with sip:… connected.``, ``Call 1 with sip:… ended (…).``) are
collected. ``-d 6 -l linphonec.log`` keeps liblinphone's full log, with every SIP message.

Facts this harness rests on (found by reading liblinphone 5.1.65 and its log):

* liblinphone opens its message database at ``$HOME/.local/share/linphone/linphone.db``
  while the core starts; when that directory is missing the start throws
  (``Unable to open linphone database…``) *before* ``_linphone_core_apply_transports()``
  has made any SIP socket, so the REGISTER then fails with belle-sip's
  ``No listening point matching…`` / ``no channel available``. ``[storage] uri`` (and the
  call-log and ZRTP databases) in the work directory make the core start fully.
* ``reg_proxy`` is only where REGISTER goes: without ``reg_route`` an INVITE to
  ``sip:alice@skinnysip.test`` is sent by DNS to ``skinnysip.test`` (belle-sip:
  ``DNS resolution failed``). ``reg_route`` (the registrar, ``;lr``) sends every request
  of the account through Kamailio.
* linphonec 5.1 prints no registration line by itself; ``status register`` answers
  ``registered, identity=… duration=…`` once the account is registered.
* mediastreamer sends a few STUN binding requests (RFC 5389, magic cookie ``2112A442``) from
  its RTP and RTCP sockets besides the media (our media report counts them under
  ``received.stun``, apart from parse errors: RFC 7983 §7).

Always stopped by its context manager (``terminate all`` and ``quit``; its process group is
killed if it has not exited 5 s later).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from baresip_peer import write_tone_wav

from peertools import ConsolePeer, free_even_port_run, free_port, require


@dataclass
class Linphone(ConsolePeer):
    """A running linphonec: ``aor``, ``sip_port``, ``rtp_port``, ``workdir``, ``log``
    (liblinphone's debug log), ``recording`` (the WAV file the next call's received audio is
    written to), ``lines`` (every stdout line, prompts stripped); ``command``/``wait_line``
    from :class:`~peertools.ConsolePeer`."""

    PROMPT = "linphonec> "
    NAME = "linphonec"

    aor: str
    sip_port: int
    rtp_port: int
    workdir: Path
    log: Path
    recording: Path
    proc: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    async def wait_registered(self, timeout: float = 10.0) -> str:
        """Poll ``status register`` until linphonec reports the account registered; returns
        the answer line. ``AssertionError`` with the tail of its log otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            mark = len(self.lines)
            await self.command("status register")
            with contextlib.suppress(AssertionError):
                match = await self.wait_line(r"^registered(, identity=\S+ duration=\d+|=-?\d)", 2.0, mark)
                if match.group(0).startswith("registered, identity="):
                    return match.group(0)
            await asyncio.sleep(0.2)
        tail = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
        raise AssertionError(f"linphonec never registered; stdout {self.lines[-10:]}\nlog tail:\n{tail}")

    def sip_log(self) -> str:
        """liblinphone's debug log so far (it holds every SIP message sent and received)."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    async def record_to(self, name: str) -> Path:
        """Write the received audio of the next call to ``name`` in the work directory."""
        self.recording = self.workdir / name
        await self.command(f"record {self.recording}")
        return self.recording


def _codec_sections(codecs: tuple[str, ...] | None) -> str:
    """``[audio_codec_N]`` sections enabling ``codecs`` (``"mime/rate[/channels]"``, in order of
    preference); with ``[misc] add_missing_audio_codecs=0`` they are the only ones."""
    if codecs is None:
        return ""
    out = []
    for index, codec in enumerate(codecs):
        mime, rate, *channels = codec.split("/")
        out += [f"[audio_codec_{index}]", f"mime={mime}", f"rate={rate}", f"channels={channels[0] if channels else 1}",
                "enabled=1", ""]
    return "\n".join(out)


def _config(user: str, password: str, registrar: str, realm: str, algorithm: str, sip_port: int,
            rtp_port: int, workdir: Path, codecs: tuple[str, ...] | None, srtp_suites: tuple[str, ...] | None,
            dtls: bool = False, instance: str | None = None) -> str:
    # SRTP (SDES) mandatory with those suites, or DTLS-SRTP mandatory, in liblinphone's [sip] keys
    srtp = ("media_encryption=srtp\nmedia_encryption_mandatory=1\n"
            f"srtp_crypto_suites={', '.join(srtp_suites)}\n") if srtp_suites else ""
    if dtls:
        srtp = "media_encryption=dtls\nmedia_encryption_mandatory=1\n"
    return _codec_sections(codecs) + f"""[storage]
uri={workdir}/linphone.db
call_logs_db_uri={workdir}/call-history.db
zrtp_secrets_db_uri={workdir}/zrtp-secrets.db

[sip]
sip_port={sip_port}
sip_tcp_port=0
sip_tls_port=0
bind_address=127.0.0.1
use_ipv6=0
default_proxy=0
register_only_when_network_is_up=0
ping_with_options=0
guess_hostname=1
inc_timeout=60
{srtp}
[net]
firewall_policy=0
dns_srv_enabled=0

[rtp]
audio_rtp_port={rtp_port}
video_rtp_port={rtp_port + 2}
text_rtp_port={rtp_port + 4}
audio_jitt_comp=60
nortp_timeout=30

[sound]
echocancellation=0
echolimiter=0
agc=0

[video]
capture=0
display=0
automatically_initiate=0
automatically_accept=0

[misc]
enable_basic_to_client_group_chat_room_migration=0
uuid={instance or 0}
add_missing_audio_codecs={0 if codecs is not None else 1}

[auth_info_0]
username={user}
userid={user}
passwd={password}
realm={realm}
domain={realm}
algorithm={algorithm}

[proxy_0]
reg_proxy=<sip:{registrar};transport=udp>
reg_route=<sip:{registrar};transport=udp;lr>
reg_identity=sip:{user}@{realm}
reg_expires=60
reg_sendregister=1
realm={realm}
publish=0
"""


@contextlib.asynccontextmanager
async def linphonec(
    user: str,
    password: str,
    registrar: str,
    *,
    realm: str = "skinnysip.test",
    algorithm: str = "SHA-256",
    tone_hz: float = 660.0,
    auto_answer: bool = True,
    codecs: tuple[str, ...] | None = ("PCMU/8000", "PCMA/8000"),
    srtp_suites: tuple[str, ...] | None = None,
    dtls: bool = False,
    instance: str | None = None,
) -> AsyncIterator[Linphone]:
    """Start linphonec for ``user`` registering at ``registrar`` (``host:port``, UDP), sending
    a ``tone_hz`` sine from a WAV file and answering calls by itself (``-a``) unless told not
    to. What it receives is written to ``peer.recording`` (``rec-1.wav`` in its work
    directory; :meth:`Linphone.record_to` names the next one). ``codecs``: the audio codecs it
    offers and accepts (``"mime/rate[/channels]"``, e.g. ``"opus/48000/2"``); None keeps
    liblinphone's default list (opus, speex, PCMU, PCMA, GSM, G722, G729…). ``srtp_suites``:
    SRTP with SDES keys made mandatory, offering and accepting those suites, in order. ``dtls``:
    DTLS-SRTP made mandatory (liblinphone's ``media_encryption=dtls``). ``instance``: a UUID
    (without ``urn:uuid:``) for its ``+sip.instance`` (liblinphone's ``[misc] uuid``; by default
    ``0``, which sends none; with one it asks for GRUUs, RFC 5627)."""
    binary = require("linphonec")
    workdir = Path(tempfile.mkdtemp(prefix="skinnysip-linphonec-"))
    tone = write_tone_wav(workdir / "tone.wav", tone_hz)
    sip_port = free_port(socket.SOCK_DGRAM)
    rtp_port = free_even_port_run(6)  # audio RTP/RTCP, video and text pairs
    rc = workdir / "linphonerc"
    rc.write_text(_config(user, password, registrar, realm, algorithm, sip_port, rtp_port, workdir, codecs,
                          srtp_suites, dtls, instance))
    log = workdir / "linphonec.log"
    env = {**os.environ, "HOME": str(workdir), "XDG_DATA_HOME": str(workdir / "data"),
           "XDG_CONFIG_HOME": str(workdir / "config")}
    args = [binary, "-c", str(rc), "-d", "6", "-l", str(log)] + (["-a"] if auto_answer else [])
    proc = await asyncio.create_subprocess_exec(*args, stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT, env=env, cwd=workdir,
                                                start_new_session=True, limit=1 << 20)
    peer = Linphone(f"sip:{user}@{realm}", sip_port, rtp_port, workdir, log, workdir / "rec-1.wav", proc)
    peer.start_reading()
    try:
        await peer.command("soundcard use files")
        await peer.command(f"play {tone}")
        await peer.command(f"record {peer.recording}")
        yield peer
    finally:
        await peer.stop(("terminate all", "quit"), workdir)
