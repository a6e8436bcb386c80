"""A TCP relay, run as its own process by tests/hosts.py: a host's way to the database.

PostgreSQL listens on 127.0.0.1 only, which a network namespace cannot reach.
The relay listens on the root end of a host's link and forwards every
connection to the server, byte for byte, so the host's traffic crosses the
link: cutting the link cuts the host off, as unplugging a machine would.

    python -m tests.relay LISTEN_ADDRESS TARGET_ADDRESS TARGET_PORT

It prints the port it listens on, then serves until it is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys


async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            writer.close()


async def serve(listen: str, target: str, target_port: int) -> None:
    async def relay(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(target, target_port)
        except OSError:
            client_writer.close()
            return
        # No keepalives of its own: like the database server's socket, a stalled
        # link leaves the connection open until the host's side gives up.
        await asyncio.gather(pump(client_reader, server_writer), pump(server_reader, client_writer))

    server = await asyncio.start_server(relay, listen, 0)
    sys.stdout.write(f"{server.sockets[0].getsockname()[1]}\n")
    sys.stdout.flush()
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    address, target_address, port = sys.argv[1:4]
    asyncio.run(serve(address, target_address, int(port)))
