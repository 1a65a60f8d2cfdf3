"""A local Redis Cluster (scripts/redis-cluster.sh: 3 masters, 3 replicas) that can lose
a master: ``kill -9`` of its ``redis-server``, its replica promoted by ``CLUSTER FAILOVER
TAKEOVER`` (no vote of the dead master needed), and the killed node started again (it
rejoins as a replica of the promoted one)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent.parent
SCRIPT = ROOT / "scripts" / "redis-cluster.sh"


class ClusterError(RuntimeError):
    """The cluster would not start, fail over or heal."""


class LocalCluster:
    def __init__(self, port: int = 7000, directory: Path | None = None):
        self.port = port
        self.dir = directory or Path(f"/tmp/jobqueue-redis-cluster-{port}")

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.port}"

    def _script(self, *args: str) -> str:
        env = dict(os.environ, REDIS_CLUSTER_PORT=str(self.port), REDIS_CLUSTER_DIR=str(self.dir))
        done = subprocess.run([str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise ClusterError(f"redis-cluster.sh {' '.join(args)}: {done.stdout}{done.stderr}")
        return done.stdout

    def start(self) -> None:
        self._script("start")

    def stop(self) -> None:
        self._script("stop")

    @staticmethod
    def node(port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=2, socket_timeout=5)

    def nodes(self) -> list[dict[str, str]]:
        """``CLUSTER NODES`` as seen by a live node: id, port, role, master id, flags."""
        for port in range(self.port, self.port + 6):
            try:
                text = self.node(port).execute_command("CLUSTER NODES")
            except redis.RedisError:
                continue
            out = []
            for address, node in text.items():  # redis-py parses the reply: {"host:port": {...}}
                flags = str(node["flags"]).split(",")
                out.append({"id": node["node_id"], "port": address.split("@")[0].rsplit(":", 1)[1],
                            "role": "master" if "master" in flags else "replica",
                            "master": node.get("master_id", "-"), "failed": str("fail" in flags)})
            return out
        raise ClusterError("no node of the cluster answers")

    def replica_of(self, master_port: int) -> int:
        nodes = self.nodes()
        master = next(n for n in nodes if n["port"] == str(master_port))
        return int(next(n["port"] for n in nodes if n["master"] == master["id"]))

    def kill9(self, port: int) -> None:
        pid = int((self.dir / str(port) / "redis.pid").read_text().strip())
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.02)
        raise ClusterError(f"redis-server {port} (pid {pid}) outlived SIGKILL")

    def wait_in_sync(self, master_port: int, replica_port: int, timeout: float = 30) -> None:
        """Wait until the replica holds every write its master has made so far (a new
        replica's first sync waits ``repl-diskless-sync-delay``, 5 s by default)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            wanted = int(self.node(master_port).info("replication")["master_repl_offset"])
            info = self.node(replica_port).info("replication")
            if (info.get("master_link_status") == "up" and not int(info.get("master_sync_in_progress", 1))
                    and int(info.get("slave_repl_offset", -1)) >= wanted):
                return
            time.sleep(0.05)
        raise ClusterError(f"the replica on {replica_port} did not catch up with {master_port}")

    def fail_over(self, master_port: int) -> int:
        """``kill -9`` the master on ``master_port`` once its replica has caught up, and
        promote the replica; returns the promoted node's port once it serves the slots as
        master. (Writes the replica should lack are the caller's to take away: on one
        machine a live replica is seldom behind.)"""
        replica = self.replica_of(master_port)
        self.wait_in_sync(master_port, replica)
        self.kill9(master_port)
        self.node(replica).execute_command("CLUSTER FAILOVER TAKEOVER")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            info = self.node(replica).info("replication")
            state = self.node(replica).execute_command("CLUSTER INFO")
            if info.get("role") == "master" and state.get("cluster_state") == "ok":
                return replica
            time.sleep(0.05)
        raise ClusterError(f"the replica on {replica} did not take over from {master_port}")

    def rejoin(self, port: int, timeout: float = 30) -> None:
        """Start the killed node again and wait until it is a replica in a healthy cluster."""
        self._script("node", str(port))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.node(port).info("replication").get("role") == "slave" and self.healthy():
                    return
            except redis.RedisError:
                pass
            time.sleep(0.1)
        raise ClusterError(f"the node on {port} did not rejoin as a replica")

    def healthy(self) -> bool:
        return subprocess.run([str(SCRIPT), "status"], env=dict(os.environ, REDIS_CLUSTER_PORT=str(self.port),
                                                                REDIS_CLUSTER_DIR=str(self.dir)),
                              capture_output=True).returncode == 0
