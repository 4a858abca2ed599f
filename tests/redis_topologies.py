"""Real Redis topologies on loopback for the tests: a primary with a replica watched by
three Sentinels, and a Redis Cluster of three primaries.

Both are built from the ``redis-server`` of :mod:`redis_support` (a Sentinel is
``redis-server CONF --sentinel``: no other package), on free loopback ports, each
process in a temporary directory of its own, and everything is stopped when the
block ends (a process a test killed included). Readiness is read from each
process's log line or polled on a real condition with a deadline, never slept on.
Skips where ``redis-server`` or ``redis-cli`` is missing.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from redis_support import WAIT, RedisServer, free_port, redis_server

SERVICE = "dspex"
"""The name the Sentinels give the primary."""
DOWN_AFTER_MS = 1000
"""How long a Sentinel waits before it calls a silent primary down."""
NODE_TIMEOUT_MS = 1000
"""A cluster node's ``cluster-node-timeout``."""


def wait_until(what: str, condition: Callable[[], bool], timeout: float = WAIT) -> None:
    """Poll ``condition`` (a real state of a server) until true; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout}s: {what}")
        time.sleep(0.02)  # polling a real condition with a deadline, not a sleep as sync


def _answers(check: Callable[[], bool]) -> bool:
    """``check()``, False while the server it asks cannot answer."""
    import redis

    try:
        return check()
    except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
        return False


# -- Sentinel -------------------------------------------------------------------------


@dataclass
class SentinelProcess:
    """A ``redis-server --sentinel`` child on loopback."""

    process: subprocess.Popen[bytes]
    port: int

    def client(self) -> Any:
        import redis

        return redis.Redis(port=self.port, socket_timeout=WAIT)


@dataclass
class SentinelTopology:
    """A primary, its replicas, and three Sentinels watching them (:func:`sentinel_topology`)."""

    servers: list[RedisServer]
    sentinels: list[SentinelProcess] = field(default_factory=list)
    service: str = SERVICE

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}/0"

    def primary_port(self) -> int:
        """The primary's port, as the first Sentinel names it now."""
        with contextlib.closing(self.sentinels[0].client()) as client:
            return int(client.sentinel_get_master_addr_by_name(self.service)[1])

    def server(self, port: int) -> RedisServer:
        return next(s for s in self.servers if s.port == port)

    def wait_for_failover(self, old_port: int, timeout: float = WAIT) -> int:
        """Wait until every Sentinel names a primary other than ``old_port`` and that
        server says it is a primary; its port."""

        def moved() -> bool:
            ports = set()
            for sentinel in self.sentinels:
                with contextlib.closing(sentinel.client()) as client:
                    ports.add(int(client.sentinel_get_master_addr_by_name(self.service)[1]))
            if len(ports) != 1 or old_port in ports:
                return False
            with contextlib.closing(self.server(ports.pop()).client()) as client:
                return bool(client.info("replication")["role"] == "master")

        wait_until(f"a failover away from port {old_port}", lambda: _answers(moved), timeout)
        return self.primary_port()

    def primary_for(self, key: str) -> RedisServer:
        """The primary now (every key is on it)."""
        return self.server(self.primary_port())

    def promoted(self, old: RedisServer, key: str) -> RedisServer:
        """The primary a failover away from ``old`` promoted (waited for)."""
        return self.server(self.wait_for_failover(old.port))


def _start_sentinel(
    stack: contextlib.ExitStack,
    primary_port: int,
    replica_ports: list[int],
    workdir: Path,
    peers: list[tuple[int, str]],
    me: int,
) -> SentinelProcess:
    """Sentinel ``me`` of ``peers`` (port, id), told the replicas and the other
    Sentinels in its configuration (else it learns them from hello messages sent
    every 2 s, and the replicas from an INFO every 10 s)."""
    port, myid = peers[me]
    config = workdir / f"sentinel-{port}.conf"
    others = "".join(
        f"sentinel known-sentinel {SERVICE} 127.0.0.1 {p} {i}\n" for p, i in peers if p != port
    )
    replicas = "".join(f"sentinel known-replica {SERVICE} 127.0.0.1 {p}\n" for p in replica_ports)
    config.write_text(
        f'port {port}\nbind 127.0.0.1\ndir {workdir}\nlogfile ""\n'
        f"sentinel myid {myid}\n"
        f"sentinel monitor {SERVICE} 127.0.0.1 {primary_port} 2\n"
        f"{replicas}{others}"
        f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
        # Long: a Sentinel leaves a replica that follows its primary through a proxy
        # alone (it would "fix" its configuration after this long), and one failover
        # per topology is all a test makes.
        f"sentinel failover-timeout {SERVICE} 60000\n"
        f"sentinel parallel-syncs {SERVICE} 1\n"
    )
    process = subprocess.Popen(
        ["redis-server", str(config), "--sentinel"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    stack.callback(_stop, process)
    assert process.stdout is not None
    seen: list[bytes] = []
    for line in process.stdout:  # ends at EOF if the Sentinel exits instead
        seen.append(line)
        if b"+monitor master" in line:
            break
    else:
        pytest.fail(f"redis-server --sentinel did not start: {b''.join(seen[-20:]).decode()}")
    process.stdout.close()  # later log lines are dropped (Redis ignores SIGPIPE)
    return SentinelProcess(process, port)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
    process.wait(WAIT)


@contextlib.contextmanager
def sentinel_topology(
    *, replicas: int = 1, primary_port: int | None = None, replica_upstream: int | None = None
) -> Iterator[SentinelTopology]:
    """A primary, ``replicas`` replicas, and three Sentinels (quorum 2) on loopback,
    ready for a failover: each replica in sync, and every Sentinel knowing the
    replicas and the two other Sentinels. ``primary_port``: the primary's port (a
    free one by default); ``replica_upstream``: the port the replicas follow their
    primary through (a proxy's), instead of the primary's own."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not on PATH (apt-get install redis-server)")
    pytest.importorskip("redis")
    with contextlib.ExitStack() as stack:
        primary = stack.enter_context(
            redis_server("--repl-diskless-sync-delay", "0", port=primary_port)
        )
        upstream = str(replica_upstream or primary.port)
        topology = SentinelTopology([primary])
        for _ in range(replicas):
            replica = stack.enter_context(
                redis_server(
                    "--replicaof", "127.0.0.1", upstream, "--repl-diskless-sync-delay", "0"
                )
            )
            topology.servers.append(replica)
        _wait_in_sync(primary, topology.servers[1:])
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dspex-sent-")))
        peers = [(free_port(), uuid.uuid4().hex + uuid.uuid4().hex[:8]) for _ in range(3)]
        replica_ports = [s.port for s in topology.servers[1:]]
        for me in range(3):
            topology.sentinels.append(
                _start_sentinel(stack, primary.port, replica_ports, workdir, peers, me)
            )

        def known() -> bool:
            for sentinel in topology.sentinels:
                with contextlib.closing(sentinel.client()) as client:
                    state = client.sentinel_master(SERVICE)
                    if state["num-slaves"] < replicas or state["num-other-sentinels"] < 2:
                        return False
            return True

        wait_until("each Sentinel knowing the replicas and the other two", lambda: _answers(known))
        yield topology


def _wait_in_sync(primary: RedisServer, replicas: list[RedisServer]) -> None:
    """Until each replica holds a write made on the primary: in sync, and streamed
    to (after a diskless sync the primary streams writes from the replica's first
    acknowledgement, up to a second later)."""
    with contextlib.closing(primary.client()) as writer:
        writer.set("dspex-probe", 1)
        for replica in replicas:
            with contextlib.closing(replica.client()) as reader:

                def holds(reader: Any = reader) -> bool:
                    return _answers(lambda: bool(reader.exists("dspex-probe")))

                wait_until(f"replica {replica.port} holding a write made on its primary", holds)
        writer.delete("dspex-probe")


# -- Cluster ------------------------------------------------------------------------------


def free_cluster_port() -> int:
    """A free loopback port whose cluster bus port (10000 above it) is free too."""
    while True:
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


@dataclass
class ClusterTopology:
    """A Redis Cluster on loopback (:func:`cluster_topology`)."""

    servers: list[RedisServer]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{s.port}" for s in self.servers[:2])

    def owner(self, key: str) -> RedisServer:
        """The server that holds ``key``'s slot (asked of the first node that answers)."""
        import redis

        for server in self.servers:
            if server.process.poll() is not None:
                continue  # stopped by the test
            with contextlib.closing(server.client()) as client:
                try:
                    slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
                    slots = client.execute_command("CLUSTER", "SLOTS")
                except redis.ConnectionError:
                    continue
            for start, end, primary, *_ in slots:
                if int(start) <= slot <= int(end):
                    return next(s for s in self.servers if s.port == int(primary[1]))
        raise AssertionError(f"slot of {key!r} not served")

    def primary_for(self, key: str) -> RedisServer:
        return self.owner(key)

    def promoted(self, old: RedisServer, key: str) -> RedisServer:
        """The primary that took ``key``'s slot over from ``old`` (waited for: the
        cluster promotes a replica after ``cluster-node-timeout``)."""

        def moved() -> bool:
            owner = self.owner(key)
            if owner is old:
                return False
            with contextlib.closing(owner.client()) as client:
                return bool(client.cluster("info")["cluster_state"] == "ok")

        wait_until(f"a failover away from port {old.port}", lambda: _answers(moved))
        return self.owner(key)


@contextlib.contextmanager
def cluster_topology(primaries: int = 3, replicas: int = 0) -> Iterator[ClusterTopology]:
    """A Redis Cluster of ``primaries`` primaries, each with ``replicas`` replicas, on
    loopback, made with ``redis-cli --cluster create``; returns once every node says
    ``cluster_state:ok`` (and, with replicas, each primary has them in sync)."""
    if shutil.which("redis-cli") is None:
        pytest.skip("redis-cli is not on PATH (apt-get install redis-tools)")
    pytest.importorskip("redis")
    with contextlib.ExitStack() as stack:
        servers = [
            stack.enter_context(
                redis_server(
                    *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
                    *("--cluster-node-timeout", str(NODE_TIMEOUT_MS)),
                    port=free_cluster_port(),
                )
            )
            for _ in range(primaries * (1 + replicas))
        ]
        made = subprocess.run(
            [
                *("redis-cli", "--cluster", "create"),
                *(f"127.0.0.1:{s.port}" for s in servers),
                *("--cluster-replicas", str(replicas), "--cluster-yes"),
            ],
            capture_output=True,
            timeout=WAIT,
            check=False,
        )
        assert made.returncode == 0, made.stdout.decode() + made.stderr.decode()
        for server in servers:
            with contextlib.closing(server.client()) as client:

                def settled(client: Any = client) -> bool:
                    return _answers(lambda: client.cluster("info")["cluster_state"] == "ok")

                wait_until(f"node {server.port} in a cluster whose state is ok", settled)
        for server in servers:
            with contextlib.closing(server.client()) as client:

                def linked(client: Any = client) -> bool:
                    info = client.info("replication")
                    return bool(info["role"] == "master" or info["master_link_status"] == "up")

                wait_until(f"node {server.port} a primary, or a replica in sync", linked)
        yield ClusterTopology(servers)


def move_slot(topology: ClusterTopology, slot: int, target: RedisServer) -> None:
    """Move one hash slot, keys and all, to ``target`` (as ``redis-cli --cluster
    reshard`` does: IMPORTING, MIGRATING, ``MIGRATE`` of its keys, then every node
    told the new owner)."""
    clients = {s.port: s.client() for s in topology.servers}
    try:
        ids = {port: c.execute_command("CLUSTER", "MYID").decode() for port, c in clients.items()}
        source = next(
            port
            for port, c in clients.items()
            for start, end, primary, *_ in c.execute_command("CLUSTER", "SLOTS")
            if int(start) <= slot <= int(end) and int(primary[1]) == port
        )
        into = clients[target.port]
        into.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source])
        clients[source].execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target.port])
        while keys := clients[source].execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
            clients[source].execute_command(
                "MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys
            )
        for client in clients.values():
            client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[target.port])
    finally:
        for client in clients.values():
            client.close()
