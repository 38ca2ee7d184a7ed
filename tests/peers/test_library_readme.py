"""The README's "Library" example, run as written (only the lab's port changed) against the
embedded lab started in this process on a free port: the probe gets the lab's 200, the phone
registers, calls the echo and hears packets back, and the printed lines say so. Also: every
name the package lists resolves, and ``import skinnysip`` alone imports none of them."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

import skinnysip
from skinnysip.lab.config import LabSettings
from skinnysip.lab.runner import Lab

pytestmark = [pytest.mark.peer, pytest.mark.timeout(90)]

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_example() -> str:
    text = README.read_text()
    section = text[text.index("## Library"):]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "the README's Library section has no python block"
    return match.group(1)


def test_every_listed_name_resolves_and_the_package_imports_lazily() -> None:
    for name in skinnysip.__all__:
        assert getattr(skinnysip, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = skinnysip.nope  # type: ignore[attr-defined]
    code = "import sys, skinnysip; print(sorted(m for m in sys.modules if m.startswith('skinnysip')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    # only the dataclass method cache, which must be in place before the first class is made
    assert loaded.stdout.strip() == "['skinnysip', 'skinnysip._dataclass_cache']", loaded.stdout


async def test_the_readme_library_example_runs_against_the_lab() -> None:
    settings = LabSettings(hosts=("127.0.0.1",), sip_port=0, sips_port=0, sccp_port=0)  # type: ignore[arg-type]
    async with Lab(settings) as lab:
        port = int(lab.sip["udp"].rsplit(":", 1)[1])
        source = readme_example().replace("port=5060", f"port={port}").replace("127.0.0.1:5060", f"127.0.0.1:{port}")
        assert source.count(str(port)) == 2, source
        main_source = source.replace("asyncio.run(main())", "")
        namespace: dict[str, object] = {"__name__": "readme_example"}
        exec(compile(main_source, "README.md", "exec"), namespace)  # noqa: S102 - our own README
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            await asyncio.wait_for(namespace["main"](), 40)  # type: ignore[operator]
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("200 OK "), lines
    state, _, rest = lines[1].partition(" ")
    packets = int(rest.split()[0])
    assert state == "confirmed" and packets >= 50, lines  # two seconds of the echo: ~100 packets
    assert float(rest.rsplit(" ", 1)[1]) >= 3.5, lines  # MOS on a clean loopback
    sent = [line for line in lines[2:] if line.startswith("sent ")]
    assert sent[0].startswith("sent INVITE sip:600@") and any(s.startswith("sent BYE") for s in sent), lines
