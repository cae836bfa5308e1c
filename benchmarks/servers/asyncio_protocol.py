"""
Baseline: an asyncio C{Protocol} that splits each chunk into lines and
answers all of a chunk's lines with one C{write}; the timestamp prefix is
built once per second.
"""

import asyncio
import sys
import time

_cache = [-1, b""]


def prefix() -> bytes:
    now = int(time.time())
    if now != _cache[0]:
        _cache[0] = now
        _cache[1] = b"[" + time.ctime(now).encode() + b"] "
    return _cache[1]


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        lines = (self.buffer + data).split(b"\n")
        self.buffer = lines.pop()
        if not lines:
            return
        p = prefix()
        out = []
        for line in lines:
            if line.endswith(b"\r"):
                out += (p, line[:-1], b"\r\n")
            else:
                out += (p, line, b"\n")
        self.transport.write(b"".join(out))


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


asyncio.run(main(int(sys.argv[1])))
