"""A PostgreSQL cluster managed by Patroni, each node a machine of its own.

`Cluster` brings up, from Debian's packages (`patroni`, `etcd-server`, and
PostgreSQL 15's binaries), what deploy/patroni/ describes for production:

- one network namespace per node, all on one bridge (10.232.K.0/24, K free
  for this run; kitchens' hosts use 10.231): the nodes reach each other and
  this namespace over their own link only, and a link can be cut
  (`ip link set … down`) and healed, as when a cable is pulled;
- etcd (one member, the DCS) in this namespace, on the bridge's address, so
  a node whose link is cut loses the DCS as well as its peers;
- Patroni on every node, as the `postgres` user (PostgreSQL refuses root),
  with synchronous_mode_strict: a commit returns only once the synchronous
  standby has it, so "confirmed" means on two machines;
- a node's clock shifted by libfaketime if asked ("+4s", "-4s"), Patroni and
  its PostgreSQL both (the monotonic clock left true, as on tests/hosts.py).

The cluster's data lives under a directory of its own in /tmp (the `postgres`
user must reach it, which pytest's private tmp_path does not allow), removed
with everything else by `Cluster.teardown`. The shared PostgreSQL server on
127.0.0.1:5432 is never touched.

`main()` brings the cluster up for a person to watch, until Ctrl-C:
`sudo deploy/cluster.sh` runs it.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from tests.hosts import clock_env, ip, libfaketime, pid_alive

INSTALL = "apt-get install -y patroni etcd-server faketime iproute2"
SUBNET = "10.232"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_PORT = 5432
REST_PORT = 8008
ETCD_PORT = 2379
DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "patroni"


def missing() -> str | None:
    """Why a cluster cannot be brought up here, or None when it can."""
    if os.geteuid() != 0:
        return f"network namespaces need root (and {INSTALL})"
    for tool in ("patroni", "etcd", "ip"):
        if shutil.which(tool) is None:
            return f"`{tool}` is missing: {INSTALL}"
    if not (PG_BIN / "postgres").exists():
        return f"PostgreSQL 15's binaries are missing from {PG_BIN}: apt-get install -y postgresql-15"
    if libfaketime() is None:
        return f"libfaketime is missing: {INSTALL}"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "there is no `postgres` user to run PostgreSQL as (PostgreSQL's package makes it)"
    return None


def sweep_leftovers() -> None:
    """Remove what the clusters of earlier runs that were killed before their teardown
    left: the processes in their namespaces (Patroni, PostgreSQL), the namespaces,
    links, bridges and folders. etcd ran in this namespace and is found by its bridge address."""
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)  # noqa: S607
    subnets: set[int] = set()
    for line in listing.stdout.splitlines():
        match = re.match(r"pqdb-(\d+)-(\d+)-(\d+)\b", line)
        if match is None or pid_alive(int(match.group(1))):
            continue
        pids = subprocess.run(["ip", "netns", "pids", match.group(0)], capture_output=True, text=True, check=False)  # noqa: S607
        for pid in pids.stdout.split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        with contextlib.suppress(OSError):
            ip("netns", "del", match.group(0))
        with contextlib.suppress(OSError):
            ip("link", "del", f"pq{match.group(2)}n{match.group(3)}o")
        subnets.add(int(match.group(2)))
    for folder in Path(tempfile.gettempdir()).glob("pizzaqueue-cluster-*-*"):
        owner = folder.name.split("-")[2]
        if owner.isdigit() and not pid_alive(int(owner)):
            shutil.rmtree(folder, ignore_errors=True)
    for k in subnets:
        etcd = subprocess.run(  # noqa: S603
            ["pgrep", "-f", f"etcd --name=dcs .*{SUBNET}.{k}.1:"],  # noqa: S607
            capture_output=True,
            text=True,
            check=False,  # noqa: S607
        )
        for pid in etcd.stdout.split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        with contextlib.suppress(OSError):
            ip("link", "del", f"pqbr{k}")


def free_subnet() -> int:
    """A K whose bridge nobody has: another run (or developer) may hold some."""
    names = set(os.listdir("/sys/class/net"))
    for k in range(1, 255):
        if f"pqbr{k}" not in names:
            return k
    raise OSError("no free 10.232.K.0/24 for a cluster")


@dataclass
class Node:
    name: str
    number: int
    subnet: int
    root: Path
    clock: str | None = None
    patroni: subprocess.Popen[bytes] | None = None

    @property
    def namespace(self) -> str:
        return f"pqdb-{os.getpid()}-{self.subnet}-{self.number}"

    @property
    def outside(self) -> str:
        return f"pq{self.subnet}n{self.number}o"

    @property
    def inside(self) -> str:
        return f"pq{self.subnet}n{self.number}i"

    @property
    def address(self) -> str:
        return f"{SUBNET}.{self.subnet}.{self.number + 1}"

    @property
    def data_dir(self) -> Path:
        return self.root / self.name / "data"

    @property
    def log(self) -> Path:
        return self.root / f"{self.name}.log"

    def command(self, argv: list[str]) -> list[str]:
        """`argv` run on this node: in its namespace, behind its link."""
        return ["ip", "netns", "exec", self.namespace, *argv]

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (FileNotFoundError, ValueError, PermissionError):
            return None

    def rest(self, path: str, method: str = "GET", body: dict[str, Any] | None = None) -> tuple[int, Any]:
        """Patroni's REST API on this node: (status, JSON answer); (0, None) when unreachable."""
        request = urllib.request.Request(  # noqa: S310 - the node's own address
            f"http://{self.address}:{REST_PORT}{path}",
            data=json.dumps(body).encode() if body is not None else None,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=3) as response:  # noqa: S310
                text = response.read().decode()
                return response.status, json.loads(text) if text.startswith(("{", "[")) else text
        except urllib.error.HTTPError as error:
            return error.code, None
        except OSError:
            return 0, None


@dataclass
class Cluster:
    """Brings a Patroni cluster up, works its failures, and removes every trace of it."""

    size: int = 2
    clocks: dict[str, str] = field(default_factory=dict)
    scope: str = "pizzaqueue"
    subnet: int = 0
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix=f"pizzaqueue-cluster-{os.getpid()}-")))
    nodes: list[Node] = field(default_factory=list)
    etcd: subprocess.Popen[bytes] | None = None
    bridge: str = ""
    cut_off: set[str] = field(default_factory=set)

    # --- bringing it up ---------------------------------------------------------------

    def up(self, timeout: float = 60) -> None:
        """The bridge and each node's link, etcd, then Patroni node by node (the first
        bootstraps the cluster, each next one copies it): returns once the leader has a
        streaming synchronous standby. Anything made is undone on a failure."""
        sweep_leftovers()
        try:
            self._wire()
            self._start_etcd()
            for node in self.nodes:
                self._start_patroni(node)
                self.wait(lambda n=node: self.role(n) in ("leader", "sync_standby", "replica"), timeout, f"{node.name}")
            self.wait(self.synchronous, timeout, "a streaming synchronous standby")
        except BaseException:
            self.teardown()
            raise

    def _wire(self) -> None:
        os.chmod(self.root, 0o755)  # noqa: S103 - the postgres user reaches its node's folder
        self.subnet = self.subnet or free_subnet()
        self.bridge = f"pqbr{self.subnet}"
        ip("link", "add", self.bridge, "type", "bridge")
        ip("addr", "add", f"{SUBNET}.{self.subnet}.1/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        postgres = pwd.getpwnam("postgres")
        for number in range(1, self.size + 1):
            node = Node(f"node{number}", number, self.subnet, self.root, self.clocks.get(f"node{number}"))
            self.nodes.append(node)
            ip("link", "add", node.outside, "type", "veth", "peer", "name", node.inside)
            ip("netns", "add", node.namespace)
            ip("link", "set", node.inside, "netns", node.namespace)
            ip("link", "set", node.outside, "master", self.bridge)
            ip("link", "set", node.outside, "up")
            ip("addr", "add", f"{node.address}/24", "dev", node.inside, namespace=node.namespace)
            ip("link", "set", node.inside, "up", namespace=node.namespace)
            ip("link", "set", "lo", "up", namespace=node.namespace)
            folder = self.root / node.name
            folder.mkdir(mode=0o700)
            os.chown(folder, postgres.pw_uid, postgres.pw_gid)

    def _start_etcd(self) -> None:
        address = f"http://{SUBNET}.{self.subnet}.1"
        log = open(self.root / "etcd.log", "wb")  # noqa: SIM115 - lives with the process
        self.etcd = subprocess.Popen(  # noqa: S603 - Debian's etcd, on the bridge's address only
            [  # noqa: S607 - found on PATH, as Debian installs it
                "etcd",
                "--name=dcs",
                f"--data-dir={self.root / 'etcd'}",
                f"--listen-client-urls={address}:{ETCD_PORT}",
                f"--advertise-client-urls={address}:{ETCD_PORT}",
                f"--listen-peer-urls={address}:{ETCD_PORT + 1}",
                f"--initial-advertise-peer-urls={address}:{ETCD_PORT + 1}",
                f"--initial-cluster=dcs={address}:{ETCD_PORT + 1}",
                "--enable-v2=false",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.wait(lambda: _reachable(f"{SUBNET}.{self.subnet}.1", ETCD_PORT), 30, "etcd")

    def config(self, node: Node) -> str:
        """The node's patroni.yml: deploy/patroni/node.yml with this node's names and addresses."""
        template = (DEPLOY / "node.yml").read_text()
        values = {
            "SCOPE": self.scope,
            "NODE": node.name,
            "ADDRESS": node.address,
            "NETWORK": f"{SUBNET}.{self.subnet}.0/24",
            "ETCD": f"{SUBNET}.{self.subnet}.1:{ETCD_PORT}",
            "DATA_DIR": str(node.data_dir),
            "SOCKET_DIR": str(node.data_dir.parent),
            "BIN_DIR": str(PG_BIN),
        }
        for key, value in values.items():
            template = template.replace("{{" + key + "}}", value)
        return template

    def _start_patroni(self, node: Node) -> None:
        path = self.root / node.name / "patroni.yml"
        path.write_text(self.config(node))
        postgres = pwd.getpwnam("postgres")
        os.chown(path, postgres.pw_uid, postgres.pw_gid)
        environment = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "HOME": str(self.root / node.name),
        }
        # The clock is set after the change of user, by `env`: libfaketime loaded into the
        # root part of the chain would make its shared state root's, out of Patroni's reach.
        clock = [f"{key}={value}" for key, value in clock_env(node.clock).items()]
        log = open(node.log, "ab")  # noqa: SIM115 - lives with the process
        # `ip netns exec`, `setpriv` and `env` all exec: the pid is Patroni's own.
        node.patroni = subprocess.Popen(  # noqa: S603 - our own command
            [  # noqa: S607 - found on PATH, as Debian installs them
                "ip",
                "netns",
                "exec",
                node.namespace,
                "setpriv",
                f"--reuid={postgres.pw_uid}",
                f"--regid={postgres.pw_gid}",
                "--init-groups",
                "env",
                *clock,
                "patroni",
                str(path),
            ],
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.root / node.name,
        )

    # --- reading it -------------------------------------------------------------------

    def members(self) -> list[dict[str, Any]]:
        """Patroni's view of the cluster, asked of any node that answers (a cut one last)."""
        for node in sorted(self.nodes, key=lambda node: node.name in self.cut_off):
            status, answer = node.rest("/cluster")
            if status == 200 and isinstance(answer, dict):
                return list(answer.get("members", []))
        return []

    def role(self, node: Node) -> str | None:
        for member in self.members():
            if member["name"] == node.name:
                return str(member.get("role"))
        return None

    def leader(self) -> Node | None:
        for member in self.members():
            if member.get("role") == "leader" and member.get("state") == "running":
                return self.node(member["name"])
        return None

    def sync_standby(self) -> Node | None:
        """The standby Patroni would promote: the synchronous one."""
        for member in self.members():
            if member.get("role") == "sync_standby":
                return self.node(member["name"])
        return None

    def node(self, name: str) -> Node:
        return next(node for node in self.nodes if node.name == name)

    def synchronous(self) -> bool:
        """A leader running and a synchronous standby streaming from it."""
        members = self.members()
        leader = any(m.get("role") == "leader" and m.get("state") == "running" for m in members)
        standby = any(m.get("role") == "sync_standby" and m.get("state") in ("streaming", "running") for m in members)
        replicas = sum(1 for m in members if m.get("role") in ("replica", "sync_standby"))
        return leader and standby and replicas == len(self.nodes) - 1

    def url(self, database: str = "postgres", **query: str) -> str:
        """libpq's multi-host URL of the cluster: every node, the writable one chosen."""
        nodes = ",".join(f"{node.address}:{PG_PORT}" for node in self.nodes)
        query = {"target_session_attrs": "read-write", **query}
        return f"postgres://postgres@{nodes}/{database}?" + "&".join(f"{k}={v}" for k, v in query.items())

    def node_url(self, node: Node, database: str = "postgres") -> str:
        """One node only, whatever its role: how a stale client would reach it."""
        return f"postgres://postgres@{node.address}:{PG_PORT}/{database}"

    def connect(self, database: str = "postgres", **kwargs: Any) -> psycopg.Connection[Any]:
        hosts = ",".join(node.address for node in self.nodes)
        ports = ",".join(str(PG_PORT) for _ in self.nodes)
        return psycopg.connect(
            host=hosts,
            port=ports,
            user="postgres",
            dbname=database,
            target_session_attrs="read-write",
            connect_timeout=3,
            autocommit=True,
            **kwargs,
        )

    def create_database(self, name: str) -> None:
        with self.connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')

    # --- working its failures ---------------------------------------------------------

    def kill_postmaster(self, node: Node) -> None:
        """SIGKILL the node's postmaster: its backends exit, and Patroni fails over."""
        pid = node.postmaster_pid()
        assert pid is not None, f"{node.name} has no postmaster"
        os.kill(pid, signal.SIGKILL)

    def cut(self, node: Node) -> None:
        """Pull the node's cable: its peers, etcd and every client lose it, nobody is told."""
        ip("link", "set", node.outside, "down")
        self.cut_off.add(node.name)

    def heal(self, node: Node) -> None:
        ip("link", "set", node.outside, "up")
        self.cut_off.discard(node.name)

    def switchover(self, candidate: Node) -> None:
        """A planned switchover to `candidate` (maintenance), as `patronictl switchover` does."""
        leader = self.leader()
        assert leader is not None, "no leader to switch over from"
        status, answer = leader.rest("/switchover", "POST", {"leader": leader.name, "candidate": candidate.name})
        assert status == 200, f"switchover refused: {status} {answer}"

    def wait(self, condition: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}\n{self.logs()[-6000:]}")
            time.sleep(0.2)

    def logs(self) -> str:
        return "\n".join(f"--- {path.name}\n{_quiet(path)[-4000:]}" for path in sorted(self.root.glob("*.log")))

    # --- taking it down ---------------------------------------------------------------

    def teardown(self) -> None:
        """Patroni first (else it restarts PostgreSQL), then every postmaster, etcd, the links."""
        for node in self.nodes:
            if node.patroni is not None and node.patroni.poll() is None:
                node.patroni.kill()
                node.patroni.wait(timeout=10)
        for node in self.nodes:
            pid = node.postmaster_pid()
            if pid is not None and pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + 10
                while pid_alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.05)
        if self.etcd is not None and self.etcd.poll() is None:
            self.etcd.kill()
            self.etcd.wait(timeout=10)
        for node in self.nodes:
            with contextlib.suppress(OSError):
                ip("netns", "del", node.namespace)
            with contextlib.suppress(OSError):
                ip("link", "del", node.outside)
        if self.bridge:
            with contextlib.suppress(OSError):
                ip("link", "del", self.bridge)
        shutil.rmtree(self.root, ignore_errors=True)


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _quiet(path: Path) -> str:
    """A log without Patroni's once-a-second "no action" lines."""
    return "\n".join(line for line in path.read_text(errors="replace").splitlines() if "INFO: no action." not in line)


def main() -> None:
    """Bring a local cluster up for a person (deploy/cluster.sh): migrated, its URL and
    Patroni's commands printed, until Ctrl-C, which takes every part of it down."""
    import argparse

    import django

    parser = argparse.ArgumentParser(description="A local Patroni cluster for pizzaqueue, until Ctrl-C.")
    parser.add_argument("--nodes", type=int, default=3, help="PostgreSQL nodes (default 3; at least 2).")
    parser.add_argument("--database", default="pizzaqueue", help="The database to create and migrate.")
    options = parser.parse_args()
    reason = missing()
    if reason is not None:
        raise SystemExit(reason)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pizzaqueue.settings")
    django.setup()
    cluster = Cluster(size=max(2, options.nodes))
    stopping = False

    def stop(_signal: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"bringing up {cluster.size} nodes and etcd under {cluster.root} …", flush=True)  # noqa: T201
    cluster.up()
    try:
        cluster.create_database(options.database)
        url = cluster.url(options.database)
        root = Path(__file__).resolve().parent.parent
        subprocess.run(  # noqa: S603 - our own command
            [os.environ.get("PYTHON", "python3"), "manage.py", "migrate", "-v", "0"],
            cwd=root,
            env={**os.environ, "DATABASE_URL": url},
            check=True,
        )
        config = cluster.root / cluster.nodes[0].name / "patroni.yml"
        leader = cluster.leader()
        print(  # noqa: T201 - this command's whole point
            f"""
The cluster is up: {", ".join(f"{n.name} {n.address}" for n in cluster.nodes)}; leader {leader.name if leader else "?"}.

  export DATABASE_URL='{url}'

  patronictl -c {config} list                     # who leads, who is synchronous
  patronictl -c {config} switchover --force       # maintenance: hand the leadership over
  kill -9 $(head -1 {cluster.root}/NODE/data/postmaster.pid)   # a crash: the standby is promoted
  ip link set {cluster.nodes[0].outside} down     # cut node1's cable (… up to heal it)

Ctrl-C takes the cluster down and removes it.""",
            flush=True,
        )
        while not stopping:
            time.sleep(0.5)
    finally:
        cluster.teardown()


if __name__ == "__main__":
    main()
