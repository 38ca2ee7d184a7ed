"""skinnysip: probe, register and call SIP and Cisco SCCP ("Skinny") servers.

Layers (see DESIGN.md): protocol (``sip``, ``sdp``, ``rtp``, ``sccp``; sans-IO) →
drivers (``net``; asyncio) → operations (``probes``, ``phone``) → interfaces
(``cli``, ``api``, ``web``).
"""

__version__ = "0.1.0"
