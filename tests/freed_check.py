"""
Run by C{test_faults.test_closed_connections_freed_without_collector} in a
process of its own (pytest-twisted's reactor keeps frames of its own alive):
serve each stream transport with the cycle collector off, let clients
send lines and vanish (TLS ones without a C{close_notify}, with a reset),
and print how many closed connections are still alive, per transport.
"""

from __future__ import annotations

import gc
import socket
import ssl
import struct
import sys
import tempfile
import weakref
from pathlib import Path
from typing import Any

import trustme
from twisted.internet import defer, reactor, task, threads

from tsecho.protocol import TimestampEchoFactory
from tsecho.tap import Options, makeService

CLIENTS = 10


def client(kind: str, port: int, path: str, context: ssl.SSLContext) -> None:
    if kind == "unix":
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(path)
    else:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    if kind == "ssl":
        sock = context.wrap_socket(sock, server_hostname="localhost")
    if kind == "haproxy":
        sock.sendall(b"PROXY TCP4 192.0.2.1 192.0.2.2 1234 21567\r\n")
    sock.settimeout(10)
    sock.sendall(b"one\n" * 1000 + b"half")
    assert sock.recv(65536)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def main(directory: Path) -> None:
    authority = trustme.CA()
    leaf = authority.issue_cert("localhost")
    leaf.private_key_pem.write_to_path(str(directory / "key.pem"))
    leaf.cert_chain_pems[0].write_to_path(str(directory / "cert.pem"))
    context = ssl.create_default_context()
    authority.configure_trust(context)
    path = str(directory / "s.sock")
    listeners = {
        "tcp": "tcp:0:interface=127.0.0.1",
        "unix": f"unix:{path}",
        "ssl": f"ssl:0:interface=127.0.0.1:privateKey={directory}/key.pem:certKey={directory}/cert.pem",
        "haproxy": "haproxy:tcp:0:interface=127.0.0.1",
    }
    built: list[weakref.ref[Any]] = []
    build = TimestampEchoFactory.buildProtocol

    def build_and_watch(self: TimestampEchoFactory, address: Any) -> Any:
        protocol = build(self, address)
        built.append(weakref.ref(protocol))
        return protocol

    TimestampEchoFactory.buildProtocol = build_and_watch  # type: ignore[method-assign]
    for kind, listen in listeners.items():
        options = Options(reactor)
        options.parseOptions(["--listen", listen, "--quiet"])
        service: Any = makeService(options)
        service.privilegedStartService()
        service.startService()
        port = getattr(service.ports[0].getHost(), "port", 0)
        built.clear()
        for _ in range(CLIENTS):
            await threads.deferToThread(client, kind, port, path, context)
        for _ in range(200):
            if not service.factory.connections:
                break
            await task.deferLater(reactor, 0.05, lambda: None)
        await task.deferLater(reactor, 0.1, lambda: None)
        alive = sum(ref() is not None for ref in built)
        print(f"{kind} {alive} of {len(built)} alive")
        await service.stopService()


def run() -> None:
    gc.disable()
    with tempfile.TemporaryDirectory() as directory:
        done = defer.ensureDeferred(main(Path(directory)))
        done.addErrback(lambda failure: (failure.printTraceback(file=sys.stdout), print("error")))
        done.addBoth(lambda _: reactor.stop())
        reactor.run()


if __name__ == "__main__":
    run()
