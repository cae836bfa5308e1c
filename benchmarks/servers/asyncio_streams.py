"""
Baseline: asyncio streams, C{readline()} then C{write()} + C{drain()} per line.
"""

import asyncio
import sys
import time


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while line := await reader.readline():
            body = line[:-2] if line.endswith(b"\r\n") else line[:-1] if line.endswith(b"\n") else line
            eol = line[len(body) :] or b"\r\n"
            writer.write(b"[" + time.ctime().encode() + b"] " + body + eol)
            await writer.drain()
    except (ConnectionError, asyncio.LimitOverrunError, ValueError):
        pass
    finally:
        writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


asyncio.run(main(int(sys.argv[1])))
