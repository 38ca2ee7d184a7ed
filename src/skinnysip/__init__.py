"""skinnysip: probe, register and call SIP and Cisco SCCP ("Skinny") servers.

Layers (see DESIGN.md): protocol (``sip``, ``sdp``, ``rtp``, ``sccp``; sans-IO) →
drivers (``net``; asyncio) → operations (``probes``, ``phone``, ``lab``, ``load``) →
interfaces (``cli``, ``api``, ``web``).

The library's entry points are names of this package, each imported on first use (so
``import skinnysip`` stays as cheap as the command line needs it):

- probes (RFC 3261; one operation each, a typed result carrying the whole wire exchange):
  ``sip_options``, ``sip_register``, ``sip_invite``, ``sip_digest_auth``, ``sip_traceroute``,
  ``sip_request`` (any other method), ``sip_usrloc`` (is a registered user reachable?) taking a
  ``ProbeRequest``; ``sccp_probe``, ``sccp_register``, ``sccp_linestate``,
  ``sccp_call_setup`` taking an ``SCCPRequest``;
- phones that stay up, call and are called: ``SIPPhone(SIPAccount(...))``,
  ``SCCPPhone(SCCPAccount(...))`` (async context managers; ``Call`` objects, ``events()``),
  with ``PhoneError``, ``CallState``, ``RegistrationState`` and the event classes;
- caller identity (STIR/SHAKEN, RFC 8224/8588): ``IdentitySigner`` (sign a PASSporT),
  ``verify_identity`` (check an Identity header value) and its ``IdentityCheck``;
- the embedded lab (``Lab(LabSettings(...))``) and load runs (``LoadConfig``, ``run_load``).

Example: ``await skinnysip.sip_options(skinnysip.ProbeRequest(host="127.0.0.1", port=5060))``
(README, "Library", has a phone calling the lab's echo). An unknown name raises
``AttributeError``.
"""

from __future__ import annotations

import importlib
from typing import Any

from skinnysip import _dataclass_cache

_dataclass_cache.install()  # before any of the package's dataclasses (issue 12: start-up)

__version__ = "0.1.0"

#: public name → (module, attribute in it)
_EXPORTS: dict[str, tuple[str, str]] = {
    "ProbeRequest": ("skinnysip.probes.sip", "ProbeRequest"),
    "sip_options": ("skinnysip.probes.sip", "options"),
    "sip_register": ("skinnysip.probes.sip", "register"),
    "sip_invite": ("skinnysip.probes.sip", "invite"),
    "sip_digest_auth": ("skinnysip.probes.sip", "digest_auth"),
    "sip_traceroute": ("skinnysip.probes.sip", "traceroute"),
    "sip_request": ("skinnysip.probes.sip", "request"),
    "sip_usrloc": ("skinnysip.probes.sip", "usrloc"),
    "SCCPRequest": ("skinnysip.probes.sccp", "SCCPRequest"),
    "sccp_probe": ("skinnysip.probes.sccp", "probe"),
    "sccp_register": ("skinnysip.probes.sccp", "register"),
    "sccp_linestate": ("skinnysip.probes.sccp", "linestate"),
    "sccp_call_setup": ("skinnysip.probes.sccp", "call_setup"),
    "SIPAccount": ("skinnysip.phone.sip_phone", "SIPAccount"),
    "SIPPhone": ("skinnysip.phone.sip_phone", "SIPPhone"),
    "SIPCall": ("skinnysip.phone.sip_phone", "SIPCall"),
    "SCCPAccount": ("skinnysip.phone.sccp_phone", "SCCPAccount"),
    "SCCPPhone": ("skinnysip.phone.sccp_phone", "SCCPPhone"),
    "SCCPCall": ("skinnysip.phone.sccp_phone", "SCCPCall"),
    "Call": ("skinnysip.phone.api", "Call"),
    "PhoneError": ("skinnysip.phone.api", "PhoneError"),
    "CallState": ("skinnysip.phone.api", "CallState"),
    "CallDirection": ("skinnysip.phone.api", "CallDirection"),
    "RegistrationState": ("skinnysip.phone.api", "RegistrationState"),
    "RegistrationChanged": ("skinnysip.phone.api", "RegistrationChanged"),
    "IncomingCall": ("skinnysip.phone.api", "IncomingCall"),
    "CallStateChanged": ("skinnysip.phone.api", "CallStateChanged"),
    "DTMFReceived": ("skinnysip.phone.api", "DTMFReceived"),
    "MessageReceived": ("skinnysip.phone.api", "MessageReceived"),
    "MessageWaiting": ("skinnysip.phone.api", "MessageWaiting"),
    "PresenceChanged": ("skinnysip.phone.api", "PresenceChanged"),
    "DialogStateChanged": ("skinnysip.phone.api", "DialogStateChanged"),
    "IdentityCheck": ("skinnysip.sip.identity", "IdentityCheck"),
    "IdentitySigner": ("skinnysip.sip.identity", "IdentitySigner"),
    "verify_identity": ("skinnysip.sip.identity", "verify_identity"),
    "Lab": ("skinnysip.lab.runner", "Lab"),
    "LabSettings": ("skinnysip.lab.config", "LabSettings"),
    "LoadConfig": ("skinnysip.load.scenarios", "LoadConfig"),
    "LoadUser": ("skinnysip.load.scenarios", "User"),
    "run_load": ("skinnysip.load.runner", "run_local"),
    "load_summary": ("skinnysip.load.runner", "summary"),
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    """PEP 562: import the module behind a public name on first use."""
    try:
        module, attribute = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'skinnysip' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
