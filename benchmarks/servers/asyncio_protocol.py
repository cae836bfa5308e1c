"""
Baseline: an asyncio C{Protocol} that splits each chunk into lines and
answers all of a chunk's lines with one C{write} (C{batching.py}).
"""

import asyncio
import sys

from batching import answer


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer, replies = answer(self.buffer, data)
        if replies:
            self.transport.write(replies)


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


asyncio.run(main(int(sys.argv[1])))
