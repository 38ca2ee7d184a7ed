"""Test helper: the lab SCCP call manager as a real separate process (``skinnysip sccp lab-cm``)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

from peertools import free_port, wait_tcp


@contextlib.contextmanager
def lab_cm_process(*extra: str) -> Iterator[int]:
    """Start ``python -m skinnysip sccp lab-cm`` on a free port; yield the port; always stop it."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "skinnysip", "sccp", "lab-cm", "--port", str(port), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        wait_tcp("127.0.0.1", port, timeout=15)
        yield port
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()
