"""The embedded lab: one process a newcomer starts (``skinnysip lab`` or ``skinnysip serve
--lab``) to register phones and make calls with audio, with nothing else installed.

- :mod:`skinnysip.lab.config`: the TOML configuration (:class:`~skinnysip.lab.config.LabSettings`).
- :mod:`skinnysip.lab.registrar`: bindings (RFC 3261 §10.3) and the digest nonce guard.
- :mod:`skinnysip.lab.proxy`: the SIP registrar + stateful record-routing proxy
  (:class:`~skinnysip.lab.proxy.LabProxy`) on UDP, TCP and TLS, IPv4 and IPv6.
- :mod:`skinnysip.lab.notifier`: the RFC 6665 notifier bookkeeping its event packages share;
  :mod:`skinnysip.lab.voicemail` (mailboxes, ``message-summary``) and
  :mod:`skinnysip.lab.presence` (``presence`` with PUBLISH, ``dialog`` for busy lamps) use it.
- :mod:`skinnysip.lab.callmanager`: the SCCP lab call manager.
- :mod:`skinnysip.lab.services`: echo, tone, playback, conference, DTMF echo, music on hold.
- :mod:`skinnysip.lab.bridge`: SCCP ⇄ SIP.
- :mod:`skinnysip.lab.runner`: :class:`~skinnysip.lab.runner.Lab`, all of them together.

Contract between the proxy and the services/bridge (unchanged from the brief):
``LabServices(domain=, extensions=, host=)`` and ``SCCPBridge(callmanager=, proxy=, domain=,
host=)``, each ``await start() -> (IP, port)`` of its own UDP SIP UAS, ``await close()``.
The proxy forwards extension numbers to the services' address and SCCP line numbers to the
bridge's, with Request-URI ``sip:<number>@<their IP:port>``; requests *from* either address
(UDP, the same socket) are trusted: never challenged. Music on hold: the proxy calls
``services.moh_start(key, (ip, port), payload_type)`` with key ``"<Call-ID>:<held party's
tag>"`` when a relayed re-INVITE offers sendonly/inactive and is answered recvonly/inactive,
and ``moh_stop(key)`` on the resuming re-INVITE and on BYE.
"""
