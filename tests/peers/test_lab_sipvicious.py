"""The lab under SIPVicious (``svmap``, ``svwar``, ``svcrack``), the scanner a security tester
points at a PBX first.

- ``svmap`` finds the lab and reads its agent name;
- ``svcrack`` finds a demo password by dictionary, the way it asks: a REGISTER whose domain is
  the lab's IP address and whose Request-URI has no port (``sip:127.0.0.1``), which the lab
  took for another server's until the 20th session (404 "not a lab domain");
- ``svwar`` cannot tell which extensions exist, over REGISTER or INVITE: the lab challenges
  every user alike (what Asterisk calls ``alwaysauthreject``), and refuses a wrong password for
  an unknown user the same way as for a known one.

Every scan is bounded (a handful of extensions or passwords) and sent to 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from test_lab_sip import port, settings

from peertools import free_port
from skinnysip.lab.runner import Lab

pytestmark = [
    pytest.mark.peer,
    pytest.mark.timeout(120),
    pytest.mark.skipif(shutil.which("svcrack") is None, reason="sipvicious is installed by scripts/install-deps.sh"),
]


@pytest.fixture
async def lab() -> AsyncIterator[Lab]:
    async with Lab(settings()) as running:
        yield running


async def sipvicious(tool: str, *args: str, timeout: float = 60.0) -> str:
    """Run one SIPVicious tool from a free local port on 127.0.0.1; its output (stdout and
    stderr together, as a user sees it)."""
    proc = await asyncio.create_subprocess_exec(
        tool, "-b", "127.0.0.1", "-P", str(free_port()), *args,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return out.decode(errors="replace")


def table_rows(output: str) -> list[list[str]]:
    """The data rows of the table a SIPVicious tool prints (``| a | b |`` lines, header dropped)."""
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in output.splitlines() if line.startswith("|")]
    return rows[1:]


async def test_svmap_finds_the_lab(lab: Lab) -> None:
    out = await sipvicious("svmap", "127.0.0.1", "-p", str(port(lab, "udp")))
    assert table_rows(out) == [[f"127.0.0.1:{port(lab, 'udp')}", "skinnysip-lab"]], out


async def test_svcrack_finds_a_demo_password_with_the_labs_address_as_domain(lab: Lab, tmp_path: Path) -> None:
    words = tmp_path / "words.txt"
    words.write_text("123456\npassword\n1001\ndemo1001\nsecret\n")
    out = await sipvicious("svcrack", "127.0.0.1", "-p", str(port(lab, "udp")), "-u", "1001", "-d", str(words))
    assert table_rows(out) == [["1001", "demo1001"]], out
    # a user the lab does not have: every password is refused alike, nothing found
    out = await sipvicious("svcrack", "127.0.0.1", "-p", str(port(lab, "udp")), "-u", "9999", "-d", str(words))
    assert table_rows(out) == [] and "found nothing" in out, out


@pytest.mark.parametrize("method", ["REGISTER", "INVITE"])
async def test_svwar_cannot_tell_which_extensions_exist(lab: Lab, method: str) -> None:
    # 1001-1003 exist, 1000 and 1004 do not: the lab answers them all with the same challenge
    out = await sipvicious("svwar", "127.0.0.1", "-p", str(port(lab, "udp")), "-e", "1000-1004", "-m", method)
    assert table_rows(out) == [], out
    assert "authentication request for an unknown extension" in out, out
    assert lab.proxy is not None and lab.proxy.bindings() == []  # and nothing got registered
