"""Test helpers: real separate processes (the lab SCCP call manager, the HTTP API) on free ports."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

from peertools import free_port, wait_tcp


@contextlib.contextmanager
def python_process(*args: str, port: int) -> Iterator[int]:
    """Run ``python ARGS`` in its own process group, wait until it accepts TCP on ``port``,
    yield the port, and always stop it (SIGINT, then SIGKILL after 10 s)."""
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_tcp("127.0.0.1", port, timeout=20)
        yield port
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


@contextlib.contextmanager
def lab_cm_process(*extra: str) -> Iterator[int]:
    """``python -m skinnysip sccp lab-cm`` on a free port; yields the port."""
    port = free_port()
    with python_process("-m", "skinnysip", "sccp", "lab-cm", "--port", str(port), *extra, port=port):
        yield port


@contextlib.contextmanager
def api_process() -> Iterator[str]:
    """The HTTP API under uvicorn on a free port; yields its base URL."""
    port = free_port()
    with python_process("-m", "uvicorn", "skinnysip.api.app:app", "--host", "127.0.0.1", "--port", str(port),
                        "--log-level", "warning", port=port):
        yield f"http://127.0.0.1:{port}"
