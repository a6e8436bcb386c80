"""Kitchens as separate hosts: a network namespace each, with its own link, addresses and clock.

A `Host` is what a kitchen on another machine looks like from the database:

- its own network namespace (`ip netns`), joined to this one by a veth pair
  with its own /30 (10.231.N.1 here, 10.231.N.2 on the host);
- the database reached over that link only: PostgreSQL listens on 127.0.0.1,
  so a relay process (tests/relay.py) listens on 10.231.N.1 and forwards to
  it, and the host's DATABASE_URL names the relay;
- its own wall clock, shifted by libfaketime (Debian's `faketime` package),
  with the monotonic clock left true (tests/hostclock/sitecustomize.py says
  why and works around libfaketime's one bug that Python meets);
- a link that can be cut and healed (`ip link set … down/up`): packets stop,
  connections stall, nothing is told, as when a cable is pulled.

Everything a host made (processes, relay, namespace, veth pair) is removed by
`Hosts.teardown`, which the `hosts` fixture runs whether the test passed or
not; a run that was itself killed leaves namespaces named after its pid,
which the next run removes.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.base import ROOT
from tests.conftest import FAST_WORKER_ENV, database_url

# The heartbeat clocks of a real chain, for the scenarios run on hosts
# (tests/processes/test_many_machines.py, bench/clocks.py): 1 s beats, a 3 s timeout, a 0.5 s tick.
CHAIN = {
    "PIZZAQUEUE_HEARTBEAT_INTERVAL": "1",
    "PIZZAQUEUE_HEARTBEAT_TIMEOUT": "3",
    "PIZZAQUEUE_MONITOR_INTERVAL": "0.5",
}
INSTALL = "apt-get install -y faketime iproute2"
SUBNET = "10.231"
NAMESPACE_PREFIX = "pizzaqueue-"
HOSTCLOCK = Path(__file__).resolve().parent / "hostclock"


def libfaketime() -> str | None:
    """The thread-safe libfaketime library, where Debian's package puts it."""
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1"))
    return found[0] if found else None


def missing() -> str | None:
    """Why hosts cannot be made on this machine, or None when they can."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return f"network namespaces need root (and {INSTALL})"
    if shutil.which("ip") is None:
        return f"`ip` is missing: {INSTALL}"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, check=False)  # noqa: S607
    if probe.returncode != 0:
        return f"`ip netns` does not work here ({probe.stderr.decode().strip()}): {INSTALL}"
    if libfaketime() is None:
        return f"libfaketime is missing: {INSTALL}"
    return None


def require_hosts() -> None:
    """Skip when hosts cannot be made; in CI, which installs everything, fail instead."""
    reason = missing()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


def ip(*args: str, namespace: str | None = None) -> None:
    command = ["ip", *(["-n", namespace] if namespace else []), *args]
    result = subprocess.run(command, capture_output=True, check=False)  # noqa: S603
    if result.returncode != 0:
        raise OSError(f"{' '.join(command)}: {result.stderr.decode().strip()}")


def clock_env(offset: str | None) -> dict[str, str]:
    """The environment that runs a process `offset` off the true time ("+60s", "-20s")."""
    if offset is None:
        return {}
    library = libfaketime()
    assert library is not None, missing()
    return {
        # Set directly rather than through the `faketime` wrapper, which forks: the
        # process the test holds (and SIGKILLs or SIGSTOPs) is the kitchen itself.
        "LD_PRELOAD": library,
        "FAKETIME": offset,
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(HOSTCLOCK), os.environ.get("PYTHONPATH")])),
    }


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_leftovers() -> None:
    """Remove the namespaces of earlier runs that were killed before their teardown."""
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)  # noqa: S607
    for line in listing.stdout.splitlines():
        match = re.match(rf"{NAMESPACE_PREFIX}(\d+)-(\d+)\b", line)
        if match and not pid_alive(int(match.group(1))):
            with contextlib.suppress(OSError):
                ip("netns", "del", match.group(0))


class LinkTakenError(OSError):
    """The veth names of a subnet exist already: another run (or host) has it."""


@dataclass
class Host:
    """One machine: a namespace, its link to this one, the relay to the database."""

    name: str
    number: int
    tmp_path: Path
    clock: str | None = None
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    relay: subprocess.Popen[bytes] | None = None
    relay_port: int = 0

    @property
    def namespace(self) -> str:
        return f"{NAMESPACE_PREFIX}{os.getpid()}-{self.number}"

    @property
    def outside(self) -> str:
        """The veth end in the root namespace (interface names are at most 15 characters)."""
        return f"pq{self.number}o"

    @property
    def inside(self) -> str:
        return f"pq{self.number}i"

    @property
    def gateway(self) -> str:
        """This side's address on the link: where the relay listens."""
        return f"{SUBNET}.{self.number}.1"

    @property
    def address(self) -> str:
        return f"{SUBNET}.{self.number}.2"

    def up(self) -> None:
        """1. the namespace; 2. the veth pair, one end moved in; 3. addresses, links up;
        4. the relay on this side's address. Raises LinkTakenError when another run
        holds this subnet's interface names; any later failure undoes what was made."""
        try:
            ip("link", "add", self.outside, "type", "veth", "peer", "name", self.inside)
        except OSError as error:
            raise LinkTakenError(str(error)) from error
        try:
            self._wire()
        except BaseException:
            self.stop_processes()
            self.down()
            raise

    def _wire(self) -> None:
        ip("netns", "add", self.namespace)
        ip("link", "set", self.inside, "netns", self.namespace)
        ip("addr", "add", f"{self.gateway}/30", "dev", self.outside)
        ip("link", "set", self.outside, "up")
        ip("addr", "add", f"{self.address}/30", "dev", self.inside, namespace=self.namespace)
        ip("link", "set", self.inside, "up", namespace=self.namespace)
        ip("link", "set", "lo", "up", namespace=self.namespace)
        target = urlsplit(database_url())
        self.relay = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.relay",
                self.gateway,
                target.hostname or "127.0.0.1",
                str(target.port or 5432),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
        )
        assert self.relay.stdout is not None
        self.relay_port = int(self.relay.stdout.readline())

    def database_url(self) -> str:
        """The test database as this host reaches it: through the relay, over the link."""
        url = urlsplit(database_url())
        auth = url.netloc.rpartition("@")[0]
        return urlunsplit((url.scheme, f"{auth}@{self.gateway}:{self.relay_port}", url.path, "", ""))

    def command(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.namespace, *argv]

    def env(self, **extra: str) -> dict[str, str]:
        environment = {**os.environ, **extra, **clock_env(self.clock), "DATABASE_URL": self.database_url()}
        # Set by the browser tests for their own process; a kitchen keeps Django's guard.
        environment.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        return environment

    def run(self, argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run a short command on the host, with its clock and its network."""
        return subprocess.run(  # noqa: S603 - our own commands
            self.command(argv), cwd=ROOT, env=self.env(), capture_output=True, text=True, timeout=timeout, check=False
        )

    def start_worker(self, *args: str, **env: str) -> subprocess.Popen[bytes]:
        """`manage.py worker` on this host, with the fast test clocks unless `env` says otherwise."""
        log = open(self.tmp_path / f"{self.name}-worker-{len(self.procs)}.log", "wb")  # noqa: SIM115 - lives with the process
        # `ip netns exec` execs the command, so the pid is the worker's own.
        proc = subprocess.Popen(  # noqa: S603 - our own command
            self.command([sys.executable, "manage.py", "worker", "-v", "2", *args]),
            cwd=ROOT,
            env=self.env(**{**FAST_WORKER_ENV, **env}),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        return proc

    def cut(self) -> None:
        """Pull the cable: both ends of the link go down, packets stop, nobody is told."""
        ip("link", "set", self.outside, "down")

    def heal(self) -> None:
        ip("link", "set", self.outside, "up")

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.tmp_path.glob(f"{self.name}-worker-*.log")))

    def stop_processes(self) -> None:
        for proc in [*self.procs, *([self.relay] if self.relay else [])]:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGCONT)
                proc.kill()
            proc.wait(timeout=10)
        if self.relay is not None and self.relay.stdout is not None:
            self.relay.stdout.close()

    def down(self) -> None:
        """Remove the namespace and the veth pair (deleting one end deletes both)."""
        with contextlib.suppress(OSError):
            ip("netns", "del", self.namespace)
        with contextlib.suppress(OSError):
            ip("link", "del", self.outside)


class Hosts:
    """Makes hosts for one test and removes every trace of them afterwards."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.made: list[Host] = []

    def add(self, name: str, clock: str | None = None) -> Host:
        """A new host; `clock` is its offset from the true time ("+60s", "-20s"), or None."""
        taken = {host.number for host in self.made}
        for number in range(1, 255):
            if number in taken:
                continue
            host = Host(name, number, self.tmp_path, clock)
            try:
                host.up()
            except LinkTakenError:
                continue  # another run holds this subnet's names: try the next
            self.made.append(host)
            return host
        raise OSError("no free 10.231.N.0/30 subnet for another host")

    def logs(self) -> str:
        """Every host's kitchen logs, each headed by its host's name."""
        return "\n".join(f"--- {host.name} ({host.clock or 'true clock'})\n{host.logs()}" for host in self.made)

    def teardown(self) -> None:
        for host in self.made:
            try:
                host.stop_processes()
            finally:
                host.down()
