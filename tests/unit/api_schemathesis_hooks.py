"""schemathesis hooks for tests/unit/test_api_schemathesis.py (loaded via SCHEMATHESIS_HOOKS).

``caFile`` names a file on the server's disk: no generator can know which exist. A
schema-valid case (positive mode) with a generated string ``caFile`` has the field dropped;
a schema-violating case (negative mode) with a string ``caFile`` is not sent at all: dropping
the field could leave a valid request, which the API rightly accepts (schemathesis then
reports ST201), and a string there is no violation to begin with (``caFile`` is a string or
null). A value of another type in a positive case is impossible, in a negative case it stays:
it must still be a 400.

``rtpPorts`` is ``[first, last]`` with first <= last holding an even port and its successor:
a relation between the items JSON Schema cannot state. A schema-valid case whose pair breaks
it gets the pair around its smaller port instead (``[p, p + 1]``, p even); a negative case is
sent as it is (a 400 either way).

The STIR/SHAKEN fields take PEM texts (``identitySigning.key``, ``identityCertificate``,
``identityCa``): their pattern says PEM, not that the text is a usable key or certificate. A
schema-valid case has them replaced by a real EC P-256 key and its certificate; a negative
case keeps its text (a 400 either way)."""

from __future__ import annotations

import time
from typing import Any

import schemathesis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from test_sip_identity import make_cert, pem

_KEY = ec.generate_private_key(ec.SECP256R1())
_KEY_PEM = _KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()).decode()
_CERT_PEM = pem(make_cert(_KEY, days=(-1, 3650), at=time.time())).decode()


def _usable_pems(body: dict[str, Any]) -> dict[str, Any]:
    signing = body.get("identitySigning")
    if isinstance(signing, dict) and isinstance(signing.get("key"), str):
        body = {**body, "identitySigning": {**signing, "key": _KEY_PEM}}
    for name in ("identityCertificate", "identityCa"):
        if isinstance(body.get(name), str):
            body = {**body, name: _CERT_PEM}
    return body


def _negative(case: Any) -> bool:
    meta = getattr(case, "meta", None)
    return meta is not None and str(meta.generation.mode) == "negative"


def _string_ca_file(case: Any) -> bool:
    body = getattr(case, "body", None)
    return isinstance(body, dict) and isinstance(body.get("caFile"), str)


@schemathesis.hook
def filter_case(context: Any, case: Any) -> bool:
    return not (_negative(case) and _string_ca_file(case))


def _usable_rtp_ports(value: Any) -> Any:
    if not (isinstance(value, list) and len(value) == 2
            and all(type(p) in (int, float) and float(p).is_integer() for p in value)):
        return value
    first, last = (int(p) for p in value)  # 5.0 is a JSON Schema integer
    if first <= last and first + first % 2 + 1 <= last:
        return value
    low = min(first, last)
    low = min(low - low % 2, 65534) or 2
    return [low, low + 1]


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    if not _negative(case) and _string_ca_file(case):
        case.body = {k: v for k, v in case.body.items() if k != "caFile"}
    body = getattr(case, "body", None)
    if not _negative(case) and isinstance(body, dict) and "rtpPorts" in body:
        case.body = {**body, "rtpPorts": _usable_rtp_ports(body["rtpPorts"])}
    body = getattr(case, "body", None)
    if not _negative(case) and isinstance(body, dict):
        case.body = _usable_pems(body)
    return case
