"""ICE lite (RFC 8445 §2.5): the media side of a lite agent, for peers that need ICE.

A lite agent gathers only host candidates (its own media addresses), sends no connectivity
checks and is always the controlled agent: it answers the full agent's STUN Binding
requests on its media ports — each authenticated with the short-term credentials from SDP
(``a=ice-ufrag``/``a=ice-pwd``, RFC 8839 §5.4) — and sends media where the full agent
nominated (``USE-CANDIDATE``, RFC 8445 §8.2.2 and §7.3.1.5). WebRTC gateways and relays
(rtpengine ``ICE=force``, Janus, FreeSWITCH's ``verto``…) check every path this way before
they send media.

:class:`ICELiteResponder` is sans-IO: given a received STUN message and where it came from,
it returns the response to send and whether the request nominated that address. The STUN
messages themselves (parsing, MESSAGE-INTEGRITY, FINGERPRINT) are aioice's
(:mod:`aioice.stun`, imported on first use), as for :mod:`skinnysip.net.stun`.
"""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass
from typing import Any

__all__ = ["ICECredentials", "ICELiteResponder", "ICE_CHARS"]

#: ice-char (RFC 8839 §5.4): ALPHA / DIGIT / "+" / "/"
ICE_CHARS = string.ascii_letters + string.digits + "+/"
Address = tuple[str, int]


@dataclass(frozen=True)
class ICECredentials:
    """Short-term credentials of one side (RFC 8839 §5.4): ``ufrag`` 4..256 ice-chars,
    ``pwd`` 22..256 ice-chars."""

    ufrag: str
    pwd: str

    @classmethod
    def new(cls) -> ICECredentials:
        """Fresh random ones: an 8-character ufrag and a 24-character password (144 bits)."""
        return cls("".join(secrets.choice(ICE_CHARS) for _ in range(8)),
                   "".join(secrets.choice(ICE_CHARS) for _ in range(24)))


class ICELiteResponder:
    """Answers a full agent's connectivity checks on one media stream (RFC 8445 §7.3).

    ``local``: our credentials (in our SDP); ``remote_ufrag``: the peer's ``a=ice-ufrag``
    (None: not checked). :meth:`request` takes one received STUN datagram and its source:
    it returns (the response to send back to that source, or None to send nothing; True
    when it is an authenticated Binding request carrying ``USE-CANDIDATE``: the full agent
    nominated that source for media). A request whose USERNAME is not ``<our
    ufrag>:<their ufrag>`` or whose MESSAGE-INTEGRITY fails gets a 401, one without them a
    400 (RFC 8489 §9.1.3); anything else (responses, indications, garbage) is ignored.
    ``requests``/``answered``/``refused``/``nominations`` count them.
    """

    def __init__(self, local: ICECredentials, remote_ufrag: str | None = None) -> None:
        self.local = local
        self.remote_ufrag = remote_ufrag
        self.requests = 0
        self.answered = 0
        self.refused = 0
        self.nominations = 0
        self.nominated: Address | None = None

    def request(self, data: bytes, source: Address) -> tuple[bytes | None, bool]:
        from aioice import stun

        try:
            message = stun.parse_message(data)
        except ValueError:  # malformed, or a FINGERPRINT that does not match
            return None, False
        if message.message_method != stun.Method.BINDING or message.message_class != stun.Class.REQUEST:
            return None, False
        self.requests += 1
        username = message.attributes.get("USERNAME")
        if username is None or "MESSAGE-INTEGRITY" not in message.attributes:
            return self._error(stun, message, 400, "Bad Request"), False
        ours, _, theirs = str(username).partition(":")
        if ours != self.local.ufrag or (self.remote_ufrag is not None and theirs != self.remote_ufrag) \
                or not message.check_message_integrity(self.local.pwd.encode()):
            return self._error(stun, message, 401, "Unauthorized"), False
        response = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE, message.transaction_id,
                                {"XOR-MAPPED-ADDRESS": source})
        response.add_message_integrity(self.local.pwd.encode())
        self.answered += 1
        nominated = "USE-CANDIDATE" in message.attributes
        if nominated:
            self.nominations += 1
            self.nominated = source
        return bytes(response), nominated

    def _error(self, stun: Any, request: Any, code: int, reason: str) -> bytes:
        self.refused += 1
        response = stun.Message(stun.Method.BINDING, stun.Class.ERROR, request.transaction_id,
                                {"ERROR-CODE": (code, reason)})
        response.add_fingerprint()
        return bytes(response)

    def report(self) -> dict[str, Any]:
        """``{"requests", "answered", "refused", "nominations", "nominated": [ip, port] | None}``."""
        return {"requests": self.requests, "answered": self.answered, "refused": self.refused,
                "nominations": self.nominations,
                "nominated": list(self.nominated) if self.nominated is not None else None}
