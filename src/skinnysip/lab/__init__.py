"""Local peers for demos and tests (an SCCP call manager, SIP helpers)."""
