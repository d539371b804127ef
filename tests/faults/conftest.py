"""Fixtures of the fault harness: its own PostgreSQL, reachable from hosts (network
namespaces) on a bridge, and a fresh database per test. Root only: the tests skip with the
reason elsewhere."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import netns
from harness.cluster import Cluster
from harness.pgserver import FaultServer

WHY_NOT = netns.available()
needs_namespaces = pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or "")


@pytest.fixture(scope="session")
def network() -> Iterator[netns.Network]:
    if WHY_NOT is not None:
        pytest.skip(WHY_NOT)
    net = netns.Network()
    try:
        yield net
    finally:
        net.close()


@pytest.fixture(scope="session")
def fault_server(network: netns.Network) -> Iterator[FaultServer]:
    home = Path(tempfile.mkdtemp(prefix="fizz-faults-", dir="/tmp"))
    server = FaultServer(home, gateway=network.gateway)
    try:
        server.start()
        yield server
    finally:
        server.thaw(server.processes())  # never leave it frozen
        server.stop()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def cluster(fault_server: FaultServer, network: netns.Network) -> Iterator[Cluster]:
    with Cluster.on(fault_server, network) as run:
        try:
            yield run
        finally:
            for host in list(network.hosts):
                network.restore(host)
            fault_server.thaw(fault_server.processes())
