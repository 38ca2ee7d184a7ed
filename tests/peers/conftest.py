"""Session-wide real peers for the SIP tests (see sip_peers.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import pytest
import sip_peers
from sip_peers import KamailioPeer, SippPeer, kamailio


@pytest.fixture(scope="session")
def kamailio_md5() -> Iterator[KamailioPeer]:
    with kamailio("MD5") as peer:
        yield peer


@pytest.fixture(scope="session")
def kamailio_sha256() -> Iterator[KamailioPeer]:
    with kamailio("SHA-256") as peer:
        yield peer


@pytest.fixture
def sipp_uas() -> Callable[..., AbstractContextManager[SippPeer]]:
    """Factory: ``with sipp_uas("answer", "udp") as peer: ...`` — one SIPp UAS per use."""
    return sip_peers.sipp_uas
