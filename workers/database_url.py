"""DATABASE_URL, including libpq's multi-host form for a PostgreSQL cluster.

`postgres://user@db1:5432,db2:5432/pizzaqueue?target_session_attrs=read-write`
names every node of a cluster; libpq (and psycopg, which implements the same
rules) tries them in turn on each new connection and keeps the first that
accepts writes. So every connection, Django's and the LISTEN ones, finds the
primary by itself after a failover: it only has to reconnect, which every
loop already does after an outage.

dj_database_url reads one host only and refuses the form: this module hands it
the URL with the first host alone, then puts the host and port lists back in
the comma-separated form psycopg takes (`host="db1,db2"`, `port="5432,5432"`).

A multi-host URL is a cluster, where a node can vanish without a word (its
link cut, its machine gone), so it gets timeouts that a single local server
does not need, each overridable in the URL's query string:

- `connect_timeout=3`: a node that does not answer is given up after 3 s and
  the next one tried (without it, the kernel's own SYN retries: over 2 minutes);
- `tcp_user_timeout=10000`: a query sent to a node that went silent fails
  after 10 s of unacknowledged data instead of waiting on the kernel's
  retransmissions (about 15 minutes);
- TCP keepalives (KEEPALIVES below, as the LISTEN connections have), so an idle
  connection to a vanished node is noticed too.
"""

from __future__ import annotations

import re
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

# A connection that only listens never sends: without TCP keepalives a half-open one
# (the database's machine gone, a firewall or NAT that forgot the connection) would
# wait for a NOTIFY for ever. With these (libpq's parameters) the kernel probes an idle
# connection after 10 s and gives up after 3 unanswered probes 5 s apart, so
# `notifies()` fails within about 25 s and the listener reconnects.
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3}
CLUSTER_OPTIONS: dict[str, Any] = {"connect_timeout": 3, "tcp_user_timeout": 10_000, **KEEPALIVES}
# One node of the list: a name or IPv4 address, or a bracketed IPv6 address, and an optional port.
_NODE = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[^:\[\]/]+)(?::(?P<port>\d{1,5}))?$")


def _node(item: str, url_name: str) -> tuple[str, str]:
    match = _NODE.match(item.strip())
    if match is None:
        raise ImproperlyConfigured(f"{url_name}: {item!r} is not host[:port]")
    port = match.group("port") or "5432"
    if not 0 < int(port) < 65536:
        raise ImproperlyConfigured(f"{url_name}: port {port} of {item!r} is out of range")
    return match.group("host").strip("[]"), port


def parse(url: str, url_name: str = "DATABASE_URL", **kwargs: Any) -> dict[str, Any]:
    """Django's DATABASES entry for `url`: dj_database_url's, plus the multi-host form.

    Raises ImproperlyConfigured on a malformed list (an empty or unparsable
    node, a port out of range, several hosts for an engine other than PostgreSQL).
    """
    scheme, sep, rest = url.partition("://")
    netloc, slash, tail = rest.partition("/")
    auth, at, host_list = netloc.rpartition("@")
    if not sep or "," not in host_list:
        try:
            return dict(dj_database_url.parse(url, **kwargs))
        except (ValueError, dj_database_url.ParseError) as error:
            raise ImproperlyConfigured(f"{url_name} is not a database URL: {error!r}") from None
    nodes = [_node(item, url_name) for item in host_list.split(",")]
    first = f"[{nodes[0][0]}]" if ":" in nodes[0][0] else nodes[0][0]
    parsed: dict[str, Any] = dict(dj_database_url.parse(f"{scheme}{sep}{auth}{at}{first}{slash}{tail}", **kwargs))
    if parsed["ENGINE"] != "django.db.backends.postgresql":
        raise ImproperlyConfigured(f"{url_name}: several hosts are for PostgreSQL only, not {scheme}")
    parsed["HOST"] = ",".join(host for host, _ in nodes)
    parsed["PORT"] = ",".join(port for _, port in nodes)
    parsed["OPTIONS"] = {**CLUSTER_OPTIONS, **parsed.get("OPTIONS", {})}
    return parsed
