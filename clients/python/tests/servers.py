"""Test servers: a server with the lock module, one without it, and a 3-primary cluster, on
free loopback ports, stopped by their own PID. The binary comes from env LOCK_SERVER (default
`redis-server`), the module from LOCK_MODULE (default <repo>/target/release/libredis_lock.so)."""
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import redis

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.environ.get("LOCK_SERVER", "redis-server")
MODULE = os.path.abspath(os.environ.get(
    "LOCK_MODULE", os.path.join(HERE, "..", "..", "..", "target", "release", "libredis_lock.so")))


def wait_until(condition, timeout=5.0, interval=0.01, what="condition"):
    """Poll `condition` until it returns a true value (returned) or fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


_used = set()


def free_port(low=20000, high=45535):
    """A free loopback port (<= 45535, so a cluster bus port of +10000 stays <= 55535)."""
    while True:
        port = random.randint(low, high)
        if port in _used:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _used.add(port)
        return port


class Server:
    def __init__(self, module=True, cluster=False, extra=()):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="fencelock-test-")
        args = [SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", self.dir, "--daemonize", "no"]
        if module:
            args += ["--loadmodule", MODULE]
        if cluster:
            self.bus_port = free_port()
            args += ["--cluster-enabled", "yes", "--cluster-port", str(self.bus_port),
                     "--cluster-config-file", os.path.join(self.dir, "nodes.conf")]
        args += list(extra)
        self.log = open(os.path.join(self.dir, "server.log"), "wb")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        try:
            wait_until(self._ping, 10, what=f"server on port {self.port}")
        except BaseException:
            self.stop()
            raise

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}"

    def client(self, **kwargs):
        return redis.Redis(host="127.0.0.1", port=self.port, **kwargs)

    def _ping(self):
        if self.proc.poll() is not None:
            with open(os.path.join(self.dir, "server.log"), "rb") as f:
                raise RuntimeError(f"server exited: {f.read().decode(errors='replace')}")
        try:
            with self.client(socket_timeout=1) as c:
                return c.ping()
        except redis.RedisError:
            return False

    def renew_calls(self):
        """How many LOCK.RENEW the server has run (INFO commandstats)."""
        with self.client() as c:
            stats = c.info("commandstats")
        return stats.get("cmdstat_lock.renew", {}).get("calls", 0)

    def kill9(self):
        """SIGKILL the server (by its PID) and reap it."""
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class Cluster:
    """Three primaries, the 16384 slots split evenly, joined with CLUSTER MEET; `replicas`: the
    indexes of the primaries that get one replica each (`self.replicas[i]`), in sync when it
    returns; `extra`: more arguments for every node."""

    def __init__(self, n=3, replicas=(), extra=()):
        self.nodes, self.replicas = [], {}
        try:
            for _ in range(n):
                self.nodes.append(Server(cluster=True, extra=extra))
            for i in replicas:
                self.replicas[i] = Server(cluster=True, extra=extra)
            everyone = self.nodes + list(self.replicas.values())
            clients = [node.client(decode_responses=True) for node in everyone]
            per = 16384 // n
            for i, c in enumerate(clients[:n]):
                last = 16383 if i == n - 1 else (i + 1) * per - 1
                c.execute_command("CLUSTER", "ADDSLOTSRANGE", i * per, last)
            for node, c in zip(everyone[1:], clients[1:]):
                bus = int(c.config_get("cluster-port")["cluster-port"]) or node.port + 10000
                clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", node.port, bus)

            def ready():
                for c in clients:
                    info = c.cluster("info")
                    if (info.get("cluster_state") != "ok"
                            or int(info.get("cluster_known_nodes", 0)) != len(everyone)):
                        return False
                return True

            wait_until(ready, 20, 0.05, "the cluster")
            for i, replica in self.replicas.items():
                with replica.client() as c:
                    primary_id = clients[i].execute_command("CLUSTER", "MYID")
                    c.execute_command("CLUSTER", "REPLICATE", primary_id)
                    wait_until(lambda: c.info("replication").get("master_link_status") == "up",
                               20, 0.05, "the replica's sync")
            for c in clients:
                c.close()
        except BaseException:
            self.stop()
            raise

    @property
    def startup(self):
        return self.nodes[0]

    def stop(self):
        for node in self.nodes + list(self.replicas.values()):
            node.stop()
