"""Network namespaces a test makes, so that traffic "beyond loopback" stays on this machine.

:func:`nat_topology` builds three namespaces joined by veth pairs — a LAN with one host, a
router that masquerades the LAN behind its public address (iptables ``MASQUERADE``, the NAT of
a home router, with its firewall dropping what the WAN sends unasked), and a WAN where the
servers are — and removes them (and every process left in
them) afterwards. None of them has a route to the machine's own networks.

Processes run inside with :func:`ns_exec` (``ip netns exec``); a socket of this process is
made inside with :func:`entered` (``setns(2)`` for the calling thread while the block runs).
Needs root, iproute2 and iptables: :func:`unavailable` says why not.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

CLONE_NEWNET = 0x40000000

LAN_IP = "192.168.77.2"  # the phone behind the NAT
ROUTER_LAN_IP = "192.168.77.1"
PUBLIC_IP = "203.0.113.1"  # the router's WAN side: what the NAT maps the LAN to (TEST-NET-3)
WAN_IP = "203.0.113.2"  # the servers


@dataclass(frozen=True)
class NatTopology:
    lan: str
    router: str
    wan: str


def unavailable() -> str | None:
    """Why namespaces cannot be made here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/install-deps.sh installs it)"
    return None


def ns_exec(name: str) -> list[str]:
    """The command prefix that runs a program inside namespace ``name``."""
    return ["ip", "netns", "exec", name]


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=10)


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


@contextlib.contextmanager
def entered(name: str) -> Iterator[None]:
    """Run the block with the calling thread in namespace ``name``: sockets made meanwhile
    (also by an event loop on this thread) live there for good; back to ours afterwards."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(target)
        os.close(own)


def _remove(name: str) -> None:
    pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True, timeout=10).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=10)


@contextlib.contextmanager
def nat_topology() -> Iterator[NatTopology]:
    """LAN (:data:`LAN_IP`) → router (NAT to :data:`PUBLIC_IP`) → WAN (:data:`WAN_IP`)."""
    suffix = f"{os.getpid()}"
    net = NatTopology(f"sk-lan-{suffix}", f"sk-nat-{suffix}", f"sk-wan-{suffix}")
    names = (net.lan, net.router, net.wan)
    try:
        for name in names:
            _remove(name)  # a namespace an earlier crash left
            _run("ip", "netns", "add", name)
            _run("ip", "-n", name, "link", "set", "lo", "up")
        _run("ip", "link", "add", "lan0", "netns", net.lan, "type", "veth", "peer", "name", "in0", "netns", net.router)
        _run("ip", "link", "add", "out0", "netns", net.router, "type", "veth", "peer", "name", "wan0", "netns", net.wan)
        for name, dev, address in ((net.lan, "lan0", f"{LAN_IP}/24"), (net.router, "in0", f"{ROUTER_LAN_IP}/24"),
                                   (net.router, "out0", f"{PUBLIC_IP}/24"), (net.wan, "wan0", f"{WAN_IP}/24")):
            _run("ip", "-n", name, "addr", "add", address, "dev", dev)
            _run("ip", "-n", name, "link", "set", dev, "up")
        _run("ip", "-n", net.lan, "route", "add", "default", "via", ROUTER_LAN_IP)
        _run(*ns_exec(net.router), "sysctl", "-qw", "net.ipv4.ip_forward=1")
        _run(*ns_exec(net.router), "iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "out0", "-j", "MASQUERADE")
        # a home router's firewall: nothing unsolicited from the WAN reaches the router itself. Without
        # it a far end's early RTP to our mapped port (refused with ICMP) leaves a conntrack entry
        # that clashes with the mapping our own RTP then needs, and the NAT maps that to another port
        _run(*ns_exec(net.router), "iptables", "-A", "INPUT", "-i", "out0", "-m", "conntrack", "--ctstate",
             "NEW,INVALID", "-j", "DROP")
        yield net
    finally:
        for name in names:
            _remove(name)
