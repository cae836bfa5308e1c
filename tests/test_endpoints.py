"""
Every stream endpoint of SPEC.md's "Server lifecycle", proven over real
sockets: C{tcp6}, C{unix}, C{ssl}, C{systemd} (socket activation) and several
C{--listen} at once; and that L{tsecho.listeners} needs Twisted's internals
only for the listeners that use them: C{twistd tsecho} on a Twisted without
them still starts and serves.  (C{haproxy:} is in C{test_proxy.py}, datagrams
in C{test_datagram.py}.)
"""

from __future__ import annotations

import gc
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import trustme
import twisted
from twisted.internet import defer, endpoints, error
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from realsockets import TIMEOUT, has_ipv6_loopback, raw_exchange, read_all, serving, tcp_port
from serverprocess import running_server, twistd_command
from tsecho.service import StartupError

STAMP = rb"\[(Mon|Tue|Wed|Thu|Fri|Sat|Sun) [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4}\] "
PAYLOAD = b"one\ntwo\r\n\xff\x00three\r"


def assert_replies(replies: bytes) -> None:
    """
    C{replies} are exactly the answers to L{PAYLOAD} after a half-close:
    each line echoed byte for byte with its own terminator, the unterminated
    last one with C{\\r\\n}.
    """
    assert re.fullmatch(STAMP + rb"one\n" + STAMP + rb"two\r\n" + STAMP + rb"\xff\x00three\r\r\n", replies), replies


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback (::1) on this machine")
@pytest_twisted.ensureDeferred
async def test_tcp6() -> None:
    """
    C{--listen tcp6:0:interface=::1} answers over IPv6, half-close included,
    and logs the client as C{[::1]:PORT}.
    """
    from twisted.logger import capturedLogs

    from tsecho.logs import CONNECTION_CLOSED

    with capturedLogs() as events:  # until the server has stopped: the connection has ended
        async with serving(["--listen", "tcp6:0:interface=\\:\\:1"]) as service:
            replies = await raw_exchange(socket.AF_INET6, ("::1", tcp_port(service)), PAYLOAD)
    assert_replies(replies)
    peers = [e["peer"] for e in events if e.get("log_format") == CONNECTION_CLOSED]
    assert len(peers) == 1
    assert re.fullmatch(r"\[::1\]:\d+", peers[0])


@pytest_twisted.ensureDeferred
async def test_unix(tmp_path: Path) -> None:
    """
    C{--listen unix:PATH} answers (half-close included), gives the socket the
    default mode 0666 or the C{mode} option's, and removes the socket file
    (and its lock file) on shutdown.
    """
    path = tmp_path / "tsecho.sock"
    async with serving(["--listen", f"unix:{path}"]):
        assert path.stat().st_mode & 0o777 == 0o666
        assert (tmp_path / "tsecho.sock.lock").is_symlink()  # lockfile=1, the default
        assert_replies(await raw_exchange(socket.AF_UNIX, str(path), PAYLOAD))
    assert not path.exists()
    assert not (tmp_path / "tsecho.sock.lock").exists()
    async with serving(["--listen", f"unix:{path}:mode=600:lockfile=0"]):
        assert path.stat().st_mode & 0o777 == 0o600
        assert not (tmp_path / "tsecho.sock.lock").exists()
        assert_replies(await raw_exchange(socket.AF_UNIX, str(path), PAYLOAD))
    assert not path.exists()


@pytest_twisted.ensureDeferred
async def test_unix_stale_socket_after_crash(tmp_path: Path) -> None:
    """
    After a server using the default C{lockfile=1} is killed (SIGKILL leaves
    the socket file and the lock behind), the next start-up finds the lock
    stale, removes the old socket and serves.
    """
    path = tmp_path / "tsecho.sock"
    with running_server(tmp_path, ("--listen", f"unix:{path}")) as server:
        server.stop(signal.SIGKILL)
    assert path.exists()
    assert (tmp_path / "tsecho.sock.lock").is_symlink()
    async with serving(["--listen", f"unix:{path}"]):
        assert_replies(await raw_exchange(socket.AF_UNIX, str(path), PAYLOAD))
    assert not path.exists()


def test_unix_stale_socket_without_lockfile(tmp_path: Path) -> None:
    """
    With C{lockfile=0} nothing tells a stale socket from a live one, so a
    leftover socket file stops start-up, with one line naming the listener.
    """
    from twisted.internet import reactor

    from tsecho.tap import Options, makeService

    path = tmp_path / "tsecho.sock"
    leftover = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    leftover.bind(str(path))
    leftover.close()
    options = Options(reactor)
    options.parseOptions(["--listen", f"unix:{path}:lockfile=0"])
    service = makeService(options)
    with warnings.catch_warnings():
        # Twisted's UNIX port leaks its socket when bind() fails; collect it here.
        warnings.simplefilter("ignore", ResourceWarning)
        with pytest.raises(StartupError) as raised:
            service.privilegedStartService()
        message = str(raised.value)
        del raised  # its traceback holds the leaked socket
        gc.collect()
    assert "\n" not in message
    assert message == (
        f"tsecho: cannot listen on unix:{path}:lockfile=0: {path} already exists: if no server uses it any more, "
        "remove it (without lockfile=0, a socket left by a crashed tsecho is removed for you)"
    )


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """
    A CA made at run time and a server certificate for C{localhost} it
    signed, as PEM files: C{ca}, C{key}, C{cert} (chain included).
    """
    directory = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    server = ca.issue_cert("localhost")
    paths = {"ca": directory / "ca" / "ca.pem", "key": directory / "key.pem", "cert": directory / "cert.pem"}
    paths["ca"].parent.mkdir()
    ca.cert_pem.write_to_path(str(paths["ca"]))
    server.private_key_pem.write_to_path(str(paths["key"]))
    server.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    for blob in server.cert_chain_pems[1:]:
        blob.write_to_path(str(paths["cert"]), append=True)
    return paths


class Collect(Protocol):
    """
    A client that sends C{payload}, then closes its side once C{expect}
    bytes arrived (or at once if C{expect} is 0), and collects all it gets.
    """

    def __init__(self, payload: bytes, expect: int) -> None:
        self.payload = payload
        self.expect = expect
        self.received = b""
        self.done: defer.Deferred[bytes] = defer.Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.payload)
        if not self.expect:
            self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if self.expect and len(self.received) >= self.expect:
            assert self.transport is not None
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if reason.check(error.ConnectionDone):
            self.done.callback(self.received)
        else:
            self.done.errback(reason)


async def tls_exchange(certificates: dict[str, Path], port: int, host: str, payload: bytes, expect: int) -> bytes:
    """
    Connect with Twisted's own C{tls:} client endpoint, trusting only the
    test CA and checking that the server's certificate names C{host}.
    """
    from twisted.internet import reactor

    ca_dir = str(certificates["ca"].parent).replace(":", "\\:")
    description = f"tls:{host}:{port}:trustRoots={ca_dir}:endpoint=tcp\\:127.0.0.1\\:{port}"
    endpoint = endpoints.clientFromString(reactor, description)
    client = Collect(payload, expect)
    await endpoint.connect(Factory.forProtocol(lambda: client))
    waiting = client.done
    waiting.addTimeout(TIMEOUT, reactor)
    return await waiting


def ssl_description(certificates: dict[str, Path]) -> str:
    """
    C{--listen} for TLS on a free port of 127.0.0.1 with the test certificate.
    """
    return f"ssl:0:interface=127.0.0.1:privateKey={certificates['key']}:certKey={certificates['cert']}"


@pytest_twisted.ensureDeferred
async def test_ssl(certificates: dict[str, Path]) -> None:
    """
    C{--listen ssl:...} with certificates made at run time: a client that
    verifies the server name C{localhost} against the test CA gets exact
    replies; one that expects another name is refused by its own check.
    """
    request = b"hello\r\n\xff\x00bytes\n"
    async with serving(["--listen", ssl_description(certificates)]) as service:
        port = tcp_port(service)
        replies = await tls_exchange(certificates, port, "localhost", request, expect=2 * 27 + len(request))
        assert re.fullmatch(STAMP + rb"hello\r\n" + STAMP + rb"\xff\x00bytes\n", replies), replies
        with pytest.raises(Exception, match=r"certificate|verify|hostname|SSL"):
            await tls_exchange(certificates, port, "wrong.example", request, expect=1)


def close_notify_exchange(
    certificates: dict[str, Path], port: int, payload: bytes, version: int, *, fin: bool = False, pause: float = 0
) -> bytes:
    """
    Over TLS C{version} at most (the test CA trusted), send C{payload}, then
    (after C{pause} seconds) C{close_notify}, or with C{fin} a TCP FIN alone,
    and read every reply until the server's own C{close_notify}.
    (pyOpenSSL, because Python's C{ssl} cannot read after its own
    C{close_notify}, and Twisted's TLS client drops what arrives then.)
    """
    from OpenSSL import SSL

    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.load_verify_locations(str(certificates["ca"]))
    context.set_verify(SSL.VERIFY_PEER)
    context.set_max_proto_version(version)
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw:
        connection = SSL.Connection(context, raw)
        connection.set_tlsext_host_name(b"localhost")
        connection.set_connect_state()

        def call(method: Callable[..., Any], *args: Any) -> Any:
            # The socket has a timeout, so it is non-blocking underneath.
            while True:
                try:
                    return method(*args)
                except SSL.WantReadError:
                    if not select.select([raw], [], [], TIMEOUT)[0]:
                        raise TimeoutError from None
                except SSL.WantWriteError:
                    if not select.select([], [raw], [], TIMEOUT)[1]:
                        raise TimeoutError from None

        call(connection.do_handshake)
        call(connection.sendall, payload)
        time.sleep(pause)
        if fin:
            raw.shutdown(socket.SHUT_WR)
        else:
            call(connection.shutdown)
        received = b""
        while True:
            try:
                received += call(connection.recv, 65536)
            except SSL.ZeroReturnError:
                return received


TLS_VERSIONS = pytest.mark.parametrize("version", ["1.2", "1.3"])


def tls_version(name: str) -> int:
    """
    pyOpenSSL's constant for TLS version C{name}.
    """
    from OpenSSL import SSL

    return {"1.2": SSL.TLS1_2_VERSION, "1.3": SSL.TLS1_3_VERSION}[name]


@TLS_VERSIONS
@pytest_twisted.ensureDeferred
async def test_ssl_close_notify_answers_complete_lines(certificates: dict[str, Path], version: str) -> None:
    """
    A TLS client that sends its lines and closes its side at once (TLS
    C{close_notify}) still gets the reply to every complete line, however
    its bytes are split into reads (several exchanges).
    """
    from twisted.internet import threads

    request = b"".join(b"line %d\n" % n for n in range(20))
    expected = b"".join(STAMP + b"line %d\n" % n for n in range(20))
    async with serving(["--listen", ssl_description(certificates), "--quiet"]) as service:
        for _ in range(5):
            replies = await threads.deferToThread(
                close_notify_exchange, certificates, tcp_port(service), request, tls_version(version)
            )
            assert re.fullmatch(expected, replies), replies


@TLS_VERSIONS
@pytest_twisted.ensureDeferred
async def test_ssl_close_notify_answers_unterminated_line(certificates: dict[str, Path], version: str) -> None:
    """
    The SPEC's half-close rule over TLS: after the client's C{close_notify},
    an unterminated last line is answered with C{\\r\\n}.
    """
    from twisted.internet import threads

    async with serving(["--listen", ssl_description(certificates)]) as service:
        for _ in range(5):
            replies = await threads.deferToThread(
                close_notify_exchange, certificates, tcp_port(service), PAYLOAD, tls_version(version)
            )
            assert_replies(replies)


@pytest.mark.parametrize("pause", [0, 0.2])
@TLS_VERSIONS
@pytest_twisted.ensureDeferred
async def test_ssl_fin_without_close_notify(certificates: dict[str, Path], version: str, pause: float) -> None:
    """
    A TLS client that ends with a TCP FIN and no C{close_notify}, at once or
    after a pause, still gets every reply, the unterminated last line's too
    (with C{\\r\\n}), then the server's C{close_notify} and its close.
    """
    from twisted.internet import threads

    payload = b"abc\n" + b"L" * 1000 + b"\ndef"
    expected = STAMP + b"abc\n" + STAMP + b"L" * 1000 + b"\n" + STAMP + b"def\r\n"
    async with serving(["--listen", ssl_description(certificates)]) as service:
        for _ in range(3):
            replies = await threads.deferToThread(
                close_notify_exchange,
                certificates,
                tcp_port(service),
                payload,
                tls_version(version),
                fin=True,
                pause=pause,
            )
            assert re.fullmatch(expected, replies), replies


@implementer(IHandshakeListener)
class SlowReader(Protocol):
    """
    A TLS client that stops reading once the handshake is done (and
    L{handshake} fires), and when resumed collects C{expect} bytes.
    """

    def __init__(self, expect: int) -> None:
        self.expect = expect
        self.received = b""
        self.handshake: defer.Deferred[None] = defer.Deferred()
        self.complete: defer.Deferred[bytes] = defer.Deferred()
        self.closed: defer.Deferred[None] = defer.Deferred()

    def handshakeCompleted(self) -> None:
        assert self.transport is not None
        self.transport.pauseProducing()  # type: ignore[attr-defined]
        self.handshake.callback(None)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if len(self.received) >= self.expect and not self.complete.called:
            self.complete.callback(self.received)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.complete.called:
            self.complete.errback(reason)
        self.closed.callback(None)


@pytest_twisted.ensureDeferred
async def test_ssl_back_pressure(certificates: dict[str, Path]) -> None:
    """
    Behind TLS too, a client that sends but does not read makes the server
    stop reading (its connection is paused), and once the client reads it
    gets every reply, exactly.
    """
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    lines = [b"%05d %s\n" % (n, b"x" * 994) for n in range(4000)]
    async with serving(["--listen", ssl_description(certificates), "--quiet"]) as service:
        port = tcp_port(service)
        ca_dir = str(certificates["ca"].parent).replace(":", "\\:")
        endpoint = endpoints.clientFromString(
            reactor, f"tls:localhost:{port}:trustRoots={ca_dir}:endpoint=tcp\\:127.0.0.1\\:{port}"
        )
        client = SlowReader(expect=len(lines) * (27 + 1000))
        await endpoint.connect(Factory.forProtocol(lambda: client))
        assert client.transport is not None
        try:
            client.handshake.addTimeout(TIMEOUT, reactor)
            await client.handshake
            client.transport.write(b"".join(lines))
            deadline = time.monotonic() + TIMEOUT
            while not any(c.paused for c in service.factory.connections):
                assert time.monotonic() < deadline, "the server never paused: no back-pressure through TLS"
                await deferLater(reactor, 0.01)
            client.transport.resumeProducing()  # type: ignore[attr-defined]
            client.complete.addTimeout(TIMEOUT, reactor)
            replies = await client.complete
        except BaseException:
            client.transport.abortConnection()  # type: ignore[attr-defined]
            await client.closed
            raise
        client.transport.loseConnection()
        client.closed.addTimeout(TIMEOUT, reactor)
        await client.closed
    # Line by line: one 4000-line pattern overflows PyPy's regular expression engine.
    echoes = [re.fullmatch(STAMP + rb"(?P<line>.*\n)", reply, re.DOTALL) for reply in replies.splitlines(True)]
    assert [echo["line"] if echo else None for echo in echoes] == lines, replies[-200:]


def test_systemd_socket_activation(tmp_path: Path) -> None:
    """
    Started the way systemd starts a socket-activated service (an already
    listening socket as fd 3, C{LISTEN_FDS=1}, C{LISTEN_FDNAMES}, and
    C{LISTEN_PID} its own pid),
    C{twistd tsecho --listen systemd:domain=INET:index=0} serves that socket.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    fd = listener.fileno()
    # A shim moves the socket to fd 3, sets LISTEN_PID to its own pid and
    # execs twistd, which keeps that pid: what systemd does.
    shim = (
        "import os, sys\n"
        "fd = int(sys.argv[1])\n"
        "os.dup2(fd, 3)\n"
        "os.close(fd)\n"
        "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1', LISTEN_FDNAMES='tsecho.socket')\n"
        "os.execv(sys.argv[2], sys.argv[2:])\n"
    )
    command = [sys.executable, "-c", shim, str(fd), *twistd_command("--listen", "systemd:domain=INET:index=0")]
    log_path = tmp_path / "systemd.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command, pass_fds=(fd,), stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, env=env
        )
    listener.close()  # only the server holds it now
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
            sock.sendall(PAYLOAD)
            sock.shutdown(socket.SHUT_WR)
            assert_replies(read_all(sock))
        log = log_path.read_text()
        assert f"listening on systemd:domain=INET:index=0 (127.0.0.1:{port})" in log
        process.send_signal(signal.SIGTERM)
        status = process.wait(TIMEOUT)
        assert status in (0, -signal.SIGTERM), log_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_several_listeners_in_one_process(tmp_path: Path, certificates: dict[str, Path]) -> None:
    """
    One C{twistd tsecho} with C{--port}, C{tcp}, C{unix}, C{ssl},
    C{haproxy:tcp}, C{--udp} and C{--unix-datagram} at once serves every one.
    """
    unix_path = tmp_path / "s.sock"
    dgram_path = tmp_path / "d.sock"
    options = (
        "--port=0",
        "--listen=tcp:0:interface=127.0.0.1",
        f"--listen=unix:{unix_path}",
        f"--listen={ssl_description(certificates)}",
        "--listen=haproxy:tcp:0:interface=127.0.0.1",
        "--udp=0",
        f"--unix-datagram={dgram_path}",
    )
    with running_server(tmp_path, options, listeners=7) as server:
        ports = [int(a.rsplit(":", 1)[1]) for a in server.addresses if ":" in a]
        plain, tcp, tls, proxied, udp = ports
        for port in (plain, tcp):
            with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
                sock.sendall(PAYLOAD)
                sock.shutdown(socket.SHUT_WR)
                assert_replies(read_all(sock))
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(TIMEOUT)
            sock.connect(str(unix_path))
            sock.sendall(PAYLOAD)
            sock.shutdown(socket.SHUT_WR)
            assert_replies(read_all(sock))
        import ssl

        context = ssl.create_default_context(cafile=str(certificates["ca"]))
        with (
            socket.create_connection(("127.0.0.1", tls), timeout=TIMEOUT) as raw,
            context.wrap_socket(raw, server_hostname="localhost") as sock,
        ):
            sock.sendall(b"secure\n")
            reply = b""
            while not reply.endswith(b"\n"):
                reply += sock.recv(1024)
            assert re.fullmatch(STAMP + rb"secure\n", reply), reply
        with socket.create_connection(("127.0.0.1", proxied), timeout=TIMEOUT) as sock:
            sock.sendall(b"PROXY TCP4 198.51.100.9 192.0.2.1 45678 21567\r\n" + PAYLOAD)
            sock.shutdown(socket.SHUT_WR)
            assert_replies(read_all(sock))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(TIMEOUT)
            sock.sendto(b"datagram\n", ("127.0.0.1", udp))
            assert re.fullmatch(STAMP + rb"datagram\n", sock.recv(65536))
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.settimeout(TIMEOUT)
            sock.bind(str(tmp_path / "c.sock"))
            sock.sendto(b"unix datagram", str(dgram_path))
            assert re.fullmatch(STAMP + rb"unix datagram", sock.recv(65536))
        deadline = time.monotonic() + TIMEOUT
        while "connection from 198.51.100.9:45678" not in server.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "connection from 198.51.100.9:45678" in server.log()
        server.stop()
    assert not unix_path.exists()
    assert not dgram_path.exists()


def loaded_after(*arguments: str) -> set[str]:
    """
    Which of tsecho's listener workarounds, and of Twisted's PROXY-protocol
    modules, a fresh Python has loaded after importing C{tsecho.tap} and,
    if C{arguments} are given, parsing them as C{twistd tsecho} options and
    building their listeners' endpoints.
    """
    script = (
        "import sys\n"
        "import tsecho.tap\n"
        "if sys.argv[1:]:\n"
        "    options = tsecho.tap.Options()\n"
        "    options.parseOptions(sys.argv[1:])\n"
        "    options.endpoints()\n"
        "watched = ('twisted.protocols.haproxy', 'tsecho._tls', 'tsecho._proxy')\n"
        "print(' '.join(m for m in sys.modules if m.startswith(watched)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, *arguments], capture_output=True, text=True, timeout=60, check=True
    )
    return set(result.stdout.split())


def test_workarounds_imported_only_when_used(certificates: dict[str, Path]) -> None:
    """
    C{import tsecho.tap}, and options with C{tcp:} and C{unix:} listeners,
    load neither tsecho's TLS and PROXY workarounds nor Twisted's private
    PROXY modules; an C{ssl:} listener loads the TLS one alone, a
    C{haproxy:} listener the PROXY one (and Twisted's modules it builds on).
    """
    assert loaded_after() == set()
    assert loaded_after("--listen", "tcp:0", "--listen", "unix:/nonexistent/tsecho.sock") == set()
    assert loaded_after("--listen", ssl_description(certificates)) == {"tsecho._tls"}
    proxied = loaded_after("--listen", "haproxy:tcp:0")
    assert "tsecho._tls" not in proxied
    assert {"tsecho._proxy", "twisted.protocols.haproxy._v1parser", "twisted.protocols.haproxy._wrapper"} <= proxied


HIDE_INTERNALS = '''
"""
Run before twistd: a Twisted whose private modules and methods that tsecho's
workarounds use are gone, while its public API (and its own use of them) works.
"""
import sys

import twisted.protocols.haproxy
from twisted.protocols import tls

for name in ("_exceptions", "_info", "_v1parser", "_v2parser", "_wrapper"):
    sys.modules["twisted.protocols.haproxy." + name] = None  # import fails
    delattr(twisted.protocols.haproxy, name)

# The class loses _shutdownTLS; Twisted's own calls still reach it per instance.
shutdown = tls.TLSMemoryBIOProtocol._shutdownTLS
del tls.TLSMemoryBIOProtocol._shutdownTLS
init = tls.TLSMemoryBIOProtocol.__init__


def __init__(self, *args, **kwargs):
    init(self, *args, **kwargs)
    self._shutdownTLS = shutdown.__get__(self)


tls.TLSMemoryBIOProtocol.__init__ = __init__
'''


def test_hidden_twisted_internals(
    tmp_path: Path, certificates: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    On a Twisted without the private PROXY modules and TLS method that tsecho's
    workarounds rely on, C{twistd tsecho} still starts and serves C{tcp:} as
    always, and C{haproxy:} and C{ssl:} (twice each, once as
    C{haproxy:ssl:}) as Twisted's own endpoints do, with one warning for
    each kind naming the Twisted version and what is lost.
    """
    import ssl

    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(HIDE_INTERNALS)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(shim), os.environ.get("PYTHONPATH")])))
    options = (
        "--listen=tcp:0:interface=127.0.0.1",
        "--listen=haproxy:tcp:0:interface=127.0.0.1",
        f"--listen={ssl_description(certificates)}",
        f"--listen=haproxy:{ssl_description(certificates)}",
    )
    with running_server(tmp_path, options, listeners=4) as server:
        tcp, proxied, tls, _ = (int(a.rsplit(":", 1)[1]) for a in server.addresses)
        with socket.create_connection(("127.0.0.1", tcp), timeout=TIMEOUT) as sock:
            sock.sendall(PAYLOAD)
            sock.shutdown(socket.SHUT_WR)
            assert_replies(read_all(sock))
        with socket.create_connection(("127.0.0.1", proxied), timeout=TIMEOUT) as sock:
            sock.sendall(b"PROXY TCP4 198.51.100.9 192.0.2.1 45678 21567\r\nbehind\n")
            assert re.fullmatch(STAMP + rb"behind\n", read_line(sock))
        context = ssl.create_default_context(cafile=str(certificates["ca"]))
        with (
            socket.create_connection(("127.0.0.1", tls), timeout=TIMEOUT) as raw,
            context.wrap_socket(raw, server_hostname="localhost") as sock,
        ):
            sock.sendall(b"secure\n")
            assert re.fullmatch(STAMP + rb"secure\n", read_line(sock))
        log = server.log()
    for prefix, why in (("haproxy:", "twisted.protocols.haproxy._"), ("ssl:", "_shutdownTLS(self) is gone")):
        warnings = [line for line in log.splitlines() if f"lacks what tsecho's {prefix} listeners rely on" in line]
        assert len(warnings) == 1, log
        assert f"Twisted {twisted.__version__} lacks" in warnings[0]
        assert why in warnings[0]
        assert "without half-close" in warnings[0]
    assert "Traceback" not in log


def read_line(sock: socket.socket) -> bytes:
    """
    Read from C{sock} up to and including the first C{\\n}.
    """
    received = b""
    while not received.endswith(b"\n"):
        data = sock.recv(1024)
        assert data, received
        received += data
    return received
