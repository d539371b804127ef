"""Hosts as Linux network namespaces, joined to the root namespace by a bridge.

Each Network gets a bridge in the root namespace (its gateway address is where the fault
harness's PostgreSQL listens) and one namespace per host, linked to the bridge by a veth
pair. `cut(host)` takes the host's link down at the bridge: its packets go nowhere, as when
a cable is pulled or a switch port dies; established connections see silence, not resets.
`restore(host)` brings it back. Addresses are private (10.77.0.0/16) and exist only inside
the namespaces this module creates; everything it creates is removed on close.

A run killed before it closes its network leaves the bridge and its address behind, and
network devices outlive processes: a later run on the same machine that took the same /24
would send its packets into the dead bridge. So each Network takes a /24 that no device
holds and names everything after it (`fzbr77`, `fz77h1`, `fzv771`), trying the next one if
a name is taken.

Root only (creating namespaces needs CAP_NET_ADMIN); `available()` says why not otherwise.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field

_SUBNET_BASE = "10.77"


def available() -> str | None:
    """None when network namespaces can be used here, else the reason they cannot."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    probe = f"fzprobe{os.getpid() % 100000}"
    done = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if done.returncode != 0:
        return f"cannot create a network namespace: {done.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


@dataclass
class Host:
    name: str  # the namespace
    veth: str  # the root-namespace end of its link (on the bridge)
    address: str

    def command(self, argv: list[str]) -> list[str]:
        """argv run inside this host (ip netns exec execs it: same pid, same signals)."""
        return ["ip", "netns", "exec", self.name, *argv]


def _subnets_in_use() -> set[int]:
    """The third octets of the 10.77.x.0/24 subnets some device here already holds."""
    listing = _ip("-o", "-4", "addr", "show").stdout
    prefix = f" {_SUBNET_BASE}."
    return {int(part.split(".")[0]) for part in listing.split(prefix)[1:]}


@dataclass
class Network:
    """A bridge and hosts on a /24 of 10.77.0.0/16 that nothing else here holds."""

    hosts: list[Host] = field(default_factory=list)

    def __post_init__(self) -> None:
        taken = _subnets_in_use()
        start = os.getpid() % 250
        for step in range(250):
            octet = 1 + (start + step) % 250
            if octet in taken:
                continue
            bridge = f"fzbr{octet}"
            if _ip("link", "add", bridge, "type", "bridge", check=False).returncode == 0:
                break
        else:
            raise RuntimeError("no free 10.77.x.0/24 subnet for a test network")
        self.tag, self.bridge = str(octet), bridge
        self.gateway = f"{_SUBNET_BASE}.{octet}.1"
        self._octet = octet
        _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")

    def add_host(self) -> Host:
        number = len(self.hosts) + 1
        name = f"fz{self.tag}h{number}"
        veth = f"fzv{self.tag}{number}"
        address = f"{_SUBNET_BASE}.{self._octet}.{10 + number}"
        # This network owns its octet (it made the bridge), so a namespace or veth of these
        # names can only be a killed run's leftover.
        _ip("netns", "del", name, check=False)
        _ip("link", "del", veth, check=False)
        _ip("netns", "add", name)
        _ip("link", "add", veth, "type", "veth", "peer", "name", f"{veth}p")
        _ip("link", "set", veth, "master", self.bridge)
        _ip("link", "set", veth, "up")
        _ip("link", "set", f"{veth}p", "netns", name)
        _ip("-n", name, "link", "set", f"{veth}p", "name", "eth0")
        _ip("-n", name, "addr", "add", f"{address}/24", "dev", "eth0")
        _ip("-n", name, "link", "set", "eth0", "up")
        _ip("-n", name, "link", "set", "lo", "up")
        _ip("-n", name, "route", "add", "default", "via", self.gateway)
        host = Host(name, veth, address)
        self.hosts.append(host)
        return host

    def cut(self, host: Host) -> None:
        _ip("link", "set", host.veth, "down")

    def restore(self, host: Host) -> None:
        _ip("link", "set", host.veth, "up")

    def close(self) -> None:
        for host in self.hosts:
            _ip("netns", "del", host.name, check=False)
            _ip("link", "del", host.veth, check=False)
        _ip("link", "del", self.bridge, check=False)
        self.hosts = []
