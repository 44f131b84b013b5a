"""A TCP round-robin load balancer in a few lines, for the replica tests
and `scripts/bench-replicas`: each connection goes to the next backend and
bytes are copied both ways (TLS passes through, as with haproxy in TCP
mode).

    python balancer.py PORT HOST:PORT[,HOST:PORT...]"""

import asyncio
import itertools
import sys


async def serve(port: int, backends: list[tuple[str, int]]):
    turn = itertools.cycle(backends)

    async def pipe(reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def handle(client_reader, client_writer):
        host, backend_port = next(turn)
        try:
            reader, writer = await asyncio.open_connection(host, backend_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(pipe(client_reader, writer), pipe(reader, client_writer))

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    backends = [(b.rsplit(":", 1)[0], int(b.rsplit(":", 1)[1])) for b in sys.argv[2].split(",")]
    asyncio.run(serve(int(sys.argv[1]), backends))
