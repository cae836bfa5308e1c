"""
The C{tsecho-client} command in memory: options, exit statuses, and the
exact line on standard error for every failure.

L{run} takes the reactor and the standard streams as arguments; here the
reactor is a L{MemoryReactorClock} (see L{ResolvingReactor}) whose fake TCP connections are completed
(or refused) by L{iosim.ConnectionCompleter} against the real server factory,
so the whole path from options to endpoint to printed reply is exercised
without a network.
"""

from __future__ import annotations

import io
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from twisted.internet import defer, error
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import (
    IHostnameResolver,
    IHostResolution,
    IReactorPluggableNameResolver,
    IResolutionReceiver,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from tsecho import __version__
from tsecho.client._command import (
    CLOSE_GRACE,
    FAILED,
    INTERRUPTED,
    OK,
    TERMINATED,
    USAGE,
    Asker,
    ClientOptions,
    Conversation,
    StopSignal,
    Terminal,
    _isatty,
    main,
    open_asker,
    run,
)
from tsecho.client._errors import ServerError
from tsecho.client._input import InputLines
from tsecho.client._stream import MAX_LINE
from tsecho.protocol import ServerConfig, TimestampEchoFactory
from tsecho.timestamps import Timestamper

EPOCH = b"[Thu Jan  1 00:00:00 1970] "


def parse(*argv: str) -> ClientOptions:
    options = ClientOptions()
    options.parseOptions(list(argv))
    return options


class OriginalServer(Protocol):
    """
    C{tsTservSS.py} under Python 3: the repr of the first line, then close.
    """

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        line = data.split(b"\n", 1)[0] + b"\n"
        self.transport.write(EPOCH + repr(line).encode())
        self.transport.loseConnection()


class ClosingServer(Protocol):
    """
    Closes the connection as soon as it gets data.
    """

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.loseConnection()


@implementer(IHostnameResolver)
class NoSuchHost:
    """
    A resolver that finds no address for any name.
    """

    def resolveHostName(  # Twisted's argument names, since it passes them by name
        self,
        resolutionReceiver: IResolutionReceiver,  # noqa: N803
        hostName: str,  # noqa: N803
        portNumber: int = 0,  # noqa: N803
        addressTypes: Sequence[type[Any]] | None = None,  # noqa: N803
        transportSemantics: str = "TCP",  # noqa: N803
    ) -> IHostResolution:
        resolutionReceiver.resolutionBegan(None)  # type: ignore[arg-type]
        resolutionReceiver.resolutionComplete()
        return None  # type: ignore[return-value]


@implementer(IHostResolution)
class Resolution:
    """
    One finished name resolution; there is nothing left to cancel.
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def cancel(self) -> None:
        """
        Nothing to stop: the resolution finished before it was returned.
        """


@implementer(IHostnameResolver)
class LocalhostResolver:
    """
    A resolver that finds every name at 127.0.0.1, at once.
    """

    def resolveHostName(  # Twisted's argument names, since it passes them by name
        self,
        resolutionReceiver: IResolutionReceiver,  # noqa: N803
        hostName: str,  # noqa: N803
        portNumber: int = 0,  # noqa: N803
        addressTypes: Sequence[type[Any]] | None = None,  # noqa: N803
        transportSemantics: str = "TCP",  # noqa: N803
    ) -> IHostResolution:
        resolution = Resolution(hostName)
        resolutionReceiver.resolutionBegan(resolution)
        resolutionReceiver.addressResolved(IPv4Address("TCP", "127.0.0.1", portNumber))
        resolutionReceiver.resolutionComplete()
        return resolution


@implementer(IReactorPluggableNameResolver)
class ResolvingReactor(MemoryReactorClock):
    """
    A L{MemoryReactorClock} with a pluggable name resolver on every Twisted
    we support: Twisted 23.10's has none, so L{HostnameEndpoint} there
    resolved names in a thread pool the memory reactor never runs (and warned).

    @ivar nameResolver: the resolver; at first a L{LocalhostResolver}.
    """

    def __init__(self) -> None:
        super().__init__()
        self.nameResolver: IHostnameResolver = LocalhostResolver()

    def installNameResolver(self, resolver: IHostnameResolver) -> IHostnameResolver:  # Twisted's name
        """
        Use C{resolver} from now on.

        @return: the resolver used until now.
        """
        previous, self.nameResolver = self.nameResolver, resolver
        return previous


class Session:
    """
    One C{tsecho-client} run on a memory reactor.

    @ivar stdout: what it printed, as bytes.
    @ivar stderr: what it wrote on standard error.
    @ivar input: the L{InputLines} it reads standard input with, once started.
    """

    def __init__(self, *argv: str, interactive: bool = False, stdout: Any = None) -> None:
        self.reactor = ResolvingReactor()
        self.options = parse(*argv)
        self.stdout = stdout if stdout is not None else io.BytesIO()
        self.stderr = io.StringIO()
        self.interactive = interactive
        self.input: InputLines | None = None
        self.input_transport = StringTransport()
        self.pumps: list[iosim.IOPump] = []
        self.stdout_closed: Any = lambda: None

    def serve(self, factory: Factory[Any], port: int = 21567) -> Session:
        self.reactor.listenTCP(port, factory)
        return self

    def start(self, make_asker: Any = open_asker, stop_signal: int | None = None) -> defer.Deferred[int]:
        terminal = Terminal(
            self.stdout, self.stderr, self.interactive, self._read_input, self.stdout_closed, lambda: stop_signal
        )
        return defer.ensureDeferred(run(self.reactor, self.options, terminal, make_asker))

    def _read_input(self, lines: InputLines) -> None:
        self.input = lines
        lines.makeConnection(self.input_transport)

    def type(self, data: bytes) -> None:
        assert self.input is not None
        self.input.dataReceived(data)

    def end_input(self) -> None:
        assert self.input is not None
        self.input.connectionLost(Failure(error.ConnectionDone()))

    def exchange(self) -> None:
        """
        Complete every connection attempt against the listening server and
        move bytes until nothing moves.
        """
        completer = iosim.ConnectionCompleter(self.reactor)
        while True:
            moved = False
            for pump in self.pumps:
                moved = pump.flush() or moved
            new = completer.succeedOnce()
            if new is not None:
                self.pumps.append(new)
                moved = True
            if not moved:
                return

    def output(self) -> list[bytes]:
        return self.stdout.getvalue().splitlines()


def real_server(**config: Any) -> TimestampEchoFactory:
    return TimestampEchoFactory(ServerConfig(**config), Timestamper(utc=True), MemoryReactorClock())


class OptionsTests(SynchronousTestCase):
    """
    L{ClientOptions}: the command line.
    """

    def test_defaults(self) -> None:
        """
        By default: localhost, port 21567, 10 second timeout, stream transport,
        messages from standard input.
        """
        options = parse()
        self.assertEqual(
            (options["host"], options["port"], options["timeout"], options["udp"], options["connect"]),
            ("localhost", 21567, 10.0, False, None),
        )
        self.assertEqual(options.messages, [])
        self.assertEqual(options.target(), "localhost:21567")

    def test_messages_are_bytes(self) -> None:
        """
        Messages are the arguments' own bytes, even when not UTF-8.
        """
        raw = os.fsdecode(b"caf\xe9")
        self.assertEqual(parse("hello", "", raw).messages, [b"hello", b"", b"caf\xe9"])

    def test_targets(self) -> None:
        """
        Errors name the server as C{host:port}, C{[v6]:port}, with C{(UDP)},
        or by the C{--connect} description.
        """
        self.assertEqual(parse("--host", "::1", "--port", "7").target(), "[::1]:7")
        self.assertEqual(parse("--udp", "--port", "7").target(), "localhost:7 (UDP)")
        self.assertEqual(parse("--connect", "unix:path=/s").target(), "unix:path=/s")

    def test_bad_combinations(self) -> None:
        """
        C{--connect} excludes C{--host}/C{--port} and C{--udp}; a timeout
        must be a positive number; a message cannot hold a line break.
        """
        cases = {
            ("--connect", "tcp:host=a:port=1", "--port", "2"): "--connect replaces --host and --port; "
            "give one or the other",
            ("--connect", "tcp:host=a:port=1", "--host", "b"): "--connect replaces --host and --port; "
            "give one or the other",
            ("--connect", "tcp:host=a:port=1", "--udp"): "--udp takes --host and --port, not --connect",
            ("--timeout", "0"): "Parameter type enforcement failed: '0' is not a positive number of seconds",
            ("--timeout", "soon"): "Parameter type enforcement failed: 'soon' is not a number of seconds",
            ("a\nb",): "a MESSAGE cannot contain a line break",
        }
        for argv, message in cases.items():
            e = self.assertRaises(usage.UsageError, parse, *argv)
            self.assertEqual(str(e), message, argv)


class MainTests(SynchronousTestCase):
    """
    L{main}'s own work: parsing, before any reactor runs.
    """

    def test_usage_error(self) -> None:
        """
        A bad option: one line on standard error, status 2.
        """
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        e = self.assertRaises(SystemExit, main, ["--bogus"])
        self.assertEqual(e.code, USAGE)
        self.assertEqual(stderr.getvalue(), "tsecho-client: option --bogus not recognized (see --help)\n")

    def test_help_usage_line(self) -> None:
        """
        C{--help} starts with a C{Usage:} line, as C{twistd tsecho --help} does, and exits 0.
        """
        stdout = io.StringIO()
        self.patch(sys, "stdout", stdout)
        e = self.assertRaises(SystemExit, main, ["--help"])
        self.assertEqual(e.code, 0)
        self.assertEqual(
            stdout.getvalue().splitlines()[0],
            "Usage: tsecho-client [--host H] [--port P | --connect DESCRIPTION] [--udp] [--timeout S] [MESSAGE ...]",
        )

    def test_version(self) -> None:
        """
        C{--version} prints the client's version and exits 0.
        """
        stdout = io.StringIO()
        self.patch(sys, "stdout", stdout)
        e = self.assertRaises(SystemExit, main, ["--version"])
        self.assertEqual(e.code, 0)
        self.assertEqual(stdout.getvalue(), f"tsecho-client {__version__}\n")

    def test_version_without_standard_output(self) -> None:
        """
        Started with descriptor 1 closed (C{sys.stdout} is L{None}),
        C{--version} still exits 0, without a traceback.
        """
        self.patch(sys, "stdout", None)
        e = self.assertRaises(SystemExit, main, ["--version"])
        self.assertEqual(e.code, 0)

    def test_no_standard_output_to_flush(self) -> None:
        """
        L{stdout_may_close} around work done with descriptor 1 closed
        (C{sys.stdout} is L{None}): nothing to flush, no error.
        """
        from tsecho._cli import stdout_may_close

        self.patch(sys, "stdout", None)
        with stdout_may_close():
            pass

    def test_module_import_runs_nothing(self) -> None:
        """
        Importing C{tsecho.client.__main__} (as tools that scan modules do)
        does not run the command; only C{python -m tsecho.client} does.
        """
        import importlib

        name = "tsecho.client.__main__"
        previous = sys.modules.pop(name, None)
        if previous is not None:
            self.addCleanup(sys.modules.__setitem__, name, previous)
        self.patch(sys, "argv", ["tsecho-client", "--version"])  # would exit, were it run
        module = importlib.import_module(name)
        self.assertTrue(callable(module.main))


class StopSignalTests(SynchronousTestCase):
    """
    L{StopSignal} wraps the reactor's SIGINT and SIGTERM handlers to
    remember which signal came, and leaves other dispositions alone.
    """

    def test_wraps_only_handlers(self) -> None:
        """
        A handler the reactor installed is wrapped (and still called); a
        default or ignored disposition stays as it is.
        """
        for number in (signal.SIGINT, signal.SIGTERM):
            self.addCleanup(signal.signal, number, signal.getsignal(number))
        called: list[int] = []
        signal.signal(signal.SIGINT, lambda number, frame: called.append(number))
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        stop_signal = StopSignal()
        stop_signal.watch()
        self.assertIs(signal.getsignal(signal.SIGTERM), signal.SIG_DFL)
        handler = signal.getsignal(signal.SIGINT)
        assert callable(handler)
        handler(signal.SIGINT, None)
        self.assertEqual((stop_signal.number, called), (signal.SIGINT, [signal.SIGINT]))


class RunTests(SynchronousTestCase):
    """
    L{run}: replies on standard output, the exit status, one error line.
    """

    def test_messages_answered(self) -> None:
        """
        Each message's reply is printed on its own line, nothing goes to
        standard error, and the status is 0.
        """
        session = Session("hello", "", "world").serve(real_server())
        result = session.start()
        session.exchange()
        self.assertEqual(self.successResultOf(result), OK)
        self.assertEqual(session.stdout.getvalue(), EPOCH + b"hello\n" + EPOCH + b"\n" + EPOCH + b"world\n")
        self.assertEqual(session.stderr.getvalue(), "")
        self.assertEqual(len(session.pumps), 1)

    def test_connect_description(self) -> None:
        """
        C{--connect} takes a Twisted client endpoint string.
        """
        session = Session("--connect", "tcp:host=127.0.0.1:port=4444", "hi").serve(real_server(), 4444)
        result = session.start()
        session.exchange()
        self.assertEqual(self.successResultOf(result), OK)
        self.assertEqual(session.output(), [EPOCH + b"hi"])

    def test_original_server(self) -> None:
        """
        Against the original server each message gets its own connection and
        its repr-style reply (ended by the close) is printed as it came.
        """
        session = Session("hello", "world").serve(Factory.forProtocol(OriginalServer))
        result = session.start()
        session.exchange()
        self.assertEqual(self.successResultOf(result), OK)
        self.assertEqual(session.output(), [EPOCH + b"b'hello\\r\\n'", EPOCH + b"b'world\\r\\n'"])
        self.assertEqual(len(session.pumps), 2)

    def test_connection_refused(self) -> None:
        """
        Connection refused: status 1 and exactly one line saying so.
        """
        session = Session("--port", "4444", "hello")
        result = session.start()
        iosim.ConnectionCompleter(session.reactor).failOnce()
        session.reactor.advance(1)  # the endpoint has no other address to try
        self.assertEqual(self.successResultOf(result), FAILED)
        self.assertEqual(
            session.stderr.getvalue(), "tsecho-client: cannot connect to localhost:4444: connection refused\n"
        )
        self.assertEqual(session.stdout.getvalue(), b"")

    def test_unknown_host(self) -> None:
        """
        A host name that does not resolve: status 1, C{unknown host}.
        """
        session = Session("--host", "nosuch.invalid", "hello")
        session.reactor.installNameResolver(NoSuchHost())
        result = session.start()
        self.assertEqual(self.successResultOf(result), FAILED)
        self.assertEqual(
            session.stderr.getvalue(), "tsecho-client: cannot connect to nosuch.invalid:21567: unknown host\n"
        )

    def test_timeout(self) -> None:
        """
        No reply within C{--timeout}: status 1, one line; the replies that
        came before are printed.
        """
        session = Session("--timeout", "2.5", "hello").serve(Factory.forProtocol(Protocol))
        result = session.start()
        session.exchange()
        session.reactor.advance(2.4)
        self.assertNoResult(result)
        session.reactor.advance(0.1)
        session.exchange()
        self.assertEqual(self.successResultOf(result), FAILED)
        self.assertEqual(session.stderr.getvalue(), "tsecho-client: no reply from localhost:21567 within 2.5 seconds\n")

    def test_closed_before_answering(self) -> None:
        """
        The server closes without answering: status 1, one line.
        """
        session = Session("hello", "world").serve(Factory.forProtocol(ClosingServer))
        result = session.start()
        session.exchange()
        self.assertEqual(self.successResultOf(result), FAILED)
        self.assertEqual(
            session.stderr.getvalue(), "tsecho-client: localhost:21567 closed the connection before answering\n"
        )
        self.assertEqual(session.stdout.getvalue(), b"")

    def test_server_busy(self) -> None:
        """
        C{ERROR server busy} is printed like a reply, then one line on
        standard error and status 1.
        """
        factory = real_server(max_connections=1)
        factory.connections.add(object())  # type: ignore[arg-type]
        session = Session("hello", "world").serve(factory)
        result = session.start()
        session.exchange()
        self.assertEqual(self.successResultOf(result), FAILED)
        self.assertEqual(session.output(), [b"ERROR server busy"])
        self.assertEqual(
            session.stderr.getvalue(), "tsecho-client: the server answered with an error: ERROR server busy\n"
        )

    def test_line_too_long(self) -> None:
        """
        The replies before an C{ERROR} line are printed, then the error line;
        later messages are not.
        """
        session = Session("1234", "12345", "later").serve(real_server(max_line=4))
        result = session.start()
        session.exchange()
        self.assertEqual(self.successResultOf(result), FAILED)
        self.assertEqual(session.output(), [EPOCH + b"1234", b"ERROR line too long (limit 4 bytes)"])
        self.assertEqual(
            session.stderr.getvalue(),
            "tsecho-client: the server answered with an error: ERROR line too long (limit 4 bytes)\n",
        )

    def test_bad_endpoint(self) -> None:
        """
        A C{--connect} description Twisted does not know: status 2, one line.
        """
        session = Session("--connect", "bogus:x", "hello")
        self.assertEqual(self.successResultOf(session.start()), USAGE)
        self.assertEqual(
            session.stderr.getvalue(),
            "tsecho-client: bad --connect description bogus:x: "
            "bogus is not an endpoint type Twisted knows: start with one such as tcp: or unix:\n",
        )

    def test_endpoint_without_port(self) -> None:
        """
        A C{--connect} description without a port says which part is missing.
        """
        session = Session("--connect", "tcp:host=127.0.0.1", "hello")
        self.assertEqual(self.successResultOf(session.start()), USAGE)
        self.assertEqual(
            session.stderr.getvalue(),
            "tsecho-client: bad --connect description tcp:host=127.0.0.1: no port given: add port=...\n",
        )

    def test_stdin_lines(self) -> None:
        """
        Without messages on the command line, each line of standard input is
        one (in any chunks), until an empty line; no prompt when standard
        input is not a terminal.
        """
        session = Session().serve(real_server())
        result = session.start()
        session.type(b"a\nb")
        session.type(b"\r\n\r\nnot sent\n")
        session.exchange()
        self.assertEqual(self.successResultOf(result), OK)
        self.assertEqual(session.output(), [EPOCH + b"a", EPOCH + b"b"])
        self.assertEqual(session.stderr.getvalue(), "")
        self.assertEqual(session.input_transport.producerState, "stopped")

    def test_stdin_until_end(self) -> None:
        """
        The end of standard input ends the messages; a last line without a
        line ending counts.
        """
        session = Session().serve(real_server())
        result = session.start()
        session.type(b"a\nlast")
        session.end_input()
        session.exchange()
        self.assertEqual(self.successResultOf(result), OK)
        self.assertEqual(session.output(), [EPOCH + b"a", EPOCH + b"last"])

    def test_empty_stdin(self) -> None:
        """
        No messages at all: status 0, and no connection is even made.
        """
        session = Session()
        result = session.start()
        session.end_input()
        self.assertEqual(self.successResultOf(result), OK)
        self.assertEqual(session.reactor.tcpClients, [])

    def test_prompt_on_terminal(self) -> None:
        """
        When standard input is a terminal, a prompt goes to standard error
        whenever the client waits for a line; standard output gets only replies.
        """
        session = Session(interactive=True).serve(real_server())
        result = session.start()
        self.assertEqual(session.stderr.getvalue(), "> ")
        session.type(b"hello\n")
        session.exchange()
        self.assertEqual(session.stderr.getvalue(), "> > ")
        session.end_input()  # Ctrl-D at the prompt: end that line
        session.exchange()
        self.assertEqual(self.successResultOf(result), OK)
        self.assertEqual(session.output(), [EPOCH + b"hello"])
        self.assertEqual(session.stderr.getvalue(), "> > \n")

    def test_interrupted_at_prompt(self) -> None:
        """
        Ctrl-C at the prompt: the error goes on a line of its own, not after
        the prompt and the terminal's C{^C}.
        """
        session = Session(interactive=True).serve(real_server())
        result = session.start()
        [(trigger, args, kwargs)] = session.reactor.triggers["before"]["shutdown"]
        trigger(*args, **kwargs)
        self.assertEqual(self.successResultOf(result), INTERRUPTED)
        self.assertEqual(session.stderr.getvalue(), "> \ntsecho-client: interrupted\n")

    def test_no_prompt_for_arguments(self) -> None:
        """
        Messages from the command line are never prompted for.
        """
        session = Session("hello", interactive=True).serve(real_server())
        result = session.start()
        session.exchange()
        self.assertEqual(self.successResultOf(result), OK)
        self.assertEqual(session.stderr.getvalue(), "")

    def test_interrupted(self) -> None:
        """
        Stopped (Ctrl-C) before the end: one line and status 130.
        """
        session = Session()
        result = session.start()
        session.type(b"hello\n")
        [(trigger, args, kwargs)] = session.reactor.triggers["before"]["shutdown"]
        trigger(*args, **kwargs)
        self.assertEqual(self.successResultOf(result), INTERRUPTED)
        self.assertEqual(session.stderr.getvalue(), "tsecho-client: interrupted\n")

    def test_stdout_closed(self) -> None:
        """
        If standard output's reader has gone (C{| head -1}), the client ends
        quietly with status 0, and standard output is discarded from then on.
        """

        class Closed(io.BytesIO):
            def write(self, data: Any) -> int:
                raise BrokenPipeError(32, "Broken pipe")

        session = Session("hello", "world", stdout=Closed()).serve(real_server())
        discarded: list[bool] = []
        session.stdout_closed = lambda: discarded.append(True)
        result = session.start()
        session.exchange()
        self.assertEqual(self.successResultOf(result), OK)
        self.assertEqual(session.stderr.getvalue(), "")
        self.assertEqual(discarded, [True])

    def test_stdout_fails(self) -> None:
        """
        If standard output cannot be written for another reason, that is the
        one error line.
        """

        class Full(io.BytesIO):
            def write(self, data: Any) -> int:
                raise OSError(28, "No space left on device")

        session = Session("hello", stdout=Full()).serve(real_server())
        result = session.start()
        session.exchange()
        self.assertEqual(self.successResultOf(result), FAILED)
        self.assertEqual(
            session.stderr.getvalue(), "tsecho-client: cannot write to standard output: No space left on device\n"
        )

    def test_unexpected_failure(self) -> None:
        """
        A bug (an exception that is not a client error) still gives one line
        and status 1, never a traceback; it is logged.
        """

        class Broken:
            def ask(self, message: bytes) -> defer.Deferred[bytes]:
                return defer.fail(RuntimeError("boom"))

            def close(self) -> defer.Deferred[None]:
                return defer.succeed(None)

        session = Session("hello")
        result = session.start(lambda reactor, options: Broken())
        self.assertEqual(self.successResultOf(result), FAILED)
        self.assertEqual(session.stderr.getvalue(), "tsecho-client: unexpected error: boom\n")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_unexpected_exception(self) -> None:
        """
        Even an exception raised while starting gives one line.
        """

        def broken(reactor: Any, options: ClientOptions) -> Asker:
            raise RuntimeError("boom")

        session = Session("hello")
        self.assertEqual(self.successResultOf(session.start(broken)), FAILED)
        self.assertEqual(session.stderr.getvalue(), "tsecho-client: unexpected error: RuntimeError('boom')\n")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class BackPressureTests(SynchronousTestCase):
    """
    L{Conversation} pauses standard input while many replies are outstanding.
    """

    def test_pause_and_resume(self) -> None:
        """
        At L{Conversation.HIGH_WATER} outstanding messages reading pauses; it
        resumes once no more than L{Conversation.LOW_WATER} are left.
        """
        pending: list[defer.Deferred[bytes]] = []

        class Waiting:
            def ask(self, message: bytes) -> defer.Deferred[bytes]:
                pending.append(defer.Deferred())
                return pending[-1]

            def close(self) -> defer.Deferred[None]:
                return defer.succeed(None)

        stdout = io.BytesIO()
        conversation = Conversation(Waiting(), stdout)
        conversation.input = InputLines(conversation)
        transport = StringTransport()
        conversation.input.makeConnection(transport)
        conversation.input.dataReceived(b"m\n" * (Conversation.HIGH_WATER - 1))
        self.assertEqual(transport.producerState, "producing")
        conversation.input.dataReceived(b"m\n")
        self.assertEqual(transport.producerState, "paused")
        answered = Conversation.HIGH_WATER - Conversation.LOW_WATER
        for d in pending[: answered - 1]:
            d.callback(b"[x] m")
        self.assertEqual(transport.producerState, "paused")
        pending[answered - 1].callback(b"[x] m")
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(stdout.getvalue(), b"[x] m\n" * answered)


class FakeUDPPort:
    """
    A datagram port that records where it was connected and what it sent.
    """

    def __init__(self, protocol: Any, interface: str) -> None:
        self.interface = interface
        self.peer: tuple[str, int] | None = None
        self.written: list[bytes] = []
        protocol.makeConnection(self)

    def connect(self, host: str, port: int) -> None:
        self.peer = (host, port)

    def write(self, datagram: bytes, addr: object = None) -> None:
        self.written.append(datagram)

    def stopListening(self) -> None:
        """
        Nothing to release.
        """


class UDPReactor(ResolvingReactor):
    """
    A memory reactor with datagram ports and C{resolve}, which finds every
    name at 192.0.2.7.
    """

    def __init__(self) -> None:
        super().__init__()
        self.udp_ports: list[FakeUDPPort] = []

    def listenUDP(self, port: int, protocol: Any, interface: str = "", maxPacketSize: int = 8192) -> FakeUDPPort:  # noqa: N803
        self.udp_ports.append(FakeUDPPort(protocol, interface))
        return self.udp_ports[-1]

    def resolve(self, name: str, timeout: Sequence[int] = (1, 3, 11, 45)) -> defer.Deferred[str]:
        return defer.succeed("192.0.2.7")


class DatagramTargetTests(SynchronousTestCase):
    """
    With C{--udp}, the socket is bound and connected for the address family
    and address of C{--host}.
    """

    def sent(self, *argv: str) -> FakeUDPPort:
        reactor = UDPReactor()
        asker = open_asker(reactor, parse("--udp", *argv))
        self.assertNoResult(asker.ask(b"hello"))
        [port] = reactor.udp_ports
        self.assertEqual(port.written, [b"hello"])
        return port

    def test_ipv6_literal(self) -> None:
        """
        An IPv6 address is used as it is, from a socket bound on C{::}.
        """
        port = self.sent("--host", "::1", "--port", "7")
        self.assertEqual((port.interface, port.peer), ("::", ("::1", 7)))

    def test_ipv4_literal(self) -> None:
        """
        An IPv4 address is used as it is, from an IPv4 socket.
        """
        port = self.sent("--host", "127.0.0.1", "--port", "7")
        self.assertEqual((port.interface, port.peer), ("", ("127.0.0.1", 7)))

    def test_host_name_resolved(self) -> None:
        """
        A host name is resolved first, and the socket connected to its address.
        """
        port = self.sent("--host", "echo.example", "--port", "7")
        self.assertEqual((port.interface, port.peer), ("", ("192.0.2.7", 7)))


class Pending:
    """
    An asker whose replies the test fires; it records what it was asked.
    """

    def __init__(self, closing: defer.Deferred[None] | None = None) -> None:
        self.asked: list[bytes] = []
        self.replies: list[defer.Deferred[bytes]] = []
        self.closing = closing if closing is not None else defer.succeed(None)

    def ask(self, message: bytes) -> defer.Deferred[bytes]:
        self.asked.append(message)
        self.replies.append(defer.Deferred())
        return self.replies[-1]

    def close(self) -> defer.Deferred[None]:
        return self.closing


class ConversationEndTests(SynchronousTestCase):
    """
    How a conversation ends: the first failure settles it, and nothing after
    it is asked or printed.
    """

    def test_no_message_asked_after_failure(self) -> None:
        """
        Once a message has failed, the messages after it are not even asked.
        """
        asked: list[bytes] = []

        class Refusing:
            def ask(self, message: bytes) -> defer.Deferred[bytes]:
                asked.append(message)
                return defer.fail(error.ConnectionRefusedError())

            def close(self) -> defer.Deferred[None]:
                return defer.succeed(None)

        session = Session("one", "two", "three")
        self.assertEqual(self.successResultOf(session.start(lambda reactor, options: Refusing())), FAILED)
        self.assertEqual(asked, [b"one"])
        self.assertEqual(len(self.flushLoggedErrors(error.ConnectionRefusedError)), 1)

    def test_reply_after_failure_not_printed(self) -> None:
        """
        A reply that arrives after an earlier message failed is not printed:
        the conversation ended with that failure.
        """
        asker, stdout = Pending(), io.BytesIO()
        conversation = Conversation(asker, stdout)
        conversation.message(b"one")
        conversation.message(b"two")
        conversation.end_of_input()
        asker.replies[0].errback(ServerError(b"ERROR nope"))
        asker.replies[1].callback(b"[x] two")
        self.assertEqual(str(self.successResultOf(conversation.done)), "the server answered with an error: ERROR nope")
        self.assertEqual(stdout.getvalue(), b"")

    def test_input_without_producer(self) -> None:
        """
        Input that has no producer yet (nothing to pause) is not paused at
        the high-water mark, and the conversation still ends on a server
        error, marking the input ended.
        """
        asker, stdout = Pending(), io.BytesIO()
        conversation = Conversation(asker, stdout)
        conversation.input = InputLines(conversation)
        for _ in range(Conversation.HIGH_WATER):
            conversation.message(b"m")
        asker.replies[0].callback(b"ERROR server busy")
        self.assertIsInstance(self.successResultOf(conversation.done), ServerError)
        self.assertTrue(conversation.input.ended)
        self.assertEqual(stdout.getvalue(), b"ERROR server busy\n")

    def test_stdin_line_too_long(self) -> None:
        """
        A line of standard input longer than any message ends the run with
        one line and status 1, after the earlier lines were answered.
        """
        session = Session().serve(real_server())
        result = session.start()
        session.type(b"short\n")
        session.exchange()
        session.type(b"x" * (MAX_LINE + 1))
        session.exchange()
        self.assertEqual(self.successResultOf(result), FAILED)
        self.assertEqual(session.output(), [EPOCH + b"short"])
        self.assertEqual(
            session.stderr.getvalue(), f"tsecho-client: a line of standard input is longer than {MAX_LINE} bytes\n"
        )

    def test_slow_close_not_waited_for(self) -> None:
        """
        If closing the connections takes longer than the grace period, the
        command exits anyway, with the status of the conversation.
        """
        closing: defer.Deferred[None] = defer.Deferred()
        asker = Pending(closing)
        session = Session("hello")
        result = session.start(lambda reactor, options: asker)
        asker.replies[0].callback(b"[x] hello")
        session.reactor.advance(CLOSE_GRACE - 0.1)
        self.assertNoResult(result)
        session.reactor.advance(0.1)
        self.assertEqual(self.successResultOf(result), OK)
        self.assertEqual(session.output(), [b"[x] hello"])
        self.assertEqual(session.stderr.getvalue(), "")


class IsATTYTests(SynchronousTestCase):
    """
    Whether standard input is a terminal decides prompting; a missing or
    closed standard input is not one.
    """

    def test_not_a_terminal(self) -> None:
        """
        No stream, a closed stream, and a plain file are not terminals.
        """
        closed = io.StringIO()
        closed.close()
        self.assertEqual([_isatty(None), _isatty(closed), _isatty(io.StringIO())], [False, False, False])

    def test_terminal(self) -> None:
        """
        A stream that says it is a terminal is one.
        """

        class TTY(io.StringIO):
            def isatty(self) -> bool:
                return True

        self.assertTrue(_isatty(TTY()))


class BoundedInputTests(SynchronousTestCase):
    """
    Unbounded standard input (C{yes hello | tsecho-client}) against a server
    that does not answer, or that stops mid-stream.
    """

    def test_read_ahead_bounded(self) -> None:
        """
        However much input arrives at once, no more than
        L{Conversation.HIGH_WATER} messages are sent while none is
        answered, and the input's producer is paused.
        """
        received: list[bytes] = []

        class Stalled(Protocol):
            def dataReceived(self, data: bytes) -> None:
                if not received:
                    self.transport.write(b"[x] first\r\n")  # type: ignore[union-attr]
                received.append(data)

        session = Session().serve(Factory.forProtocol(Stalled))  # answers once, then never
        result = session.start()
        session.exchange()
        session.type(b"hello\n" * 50_000)
        session.type(b"hello\n" * 50_000)
        session.exchange()
        self.assertNoResult(result)
        self.assertEqual(session.input_transport.producerState, "paused")
        self.assertEqual(b"".join(received).count(b"\r\n"), Conversation.HIGH_WATER)

    def test_server_closes_mid_stream(self) -> None:
        """
        A persistent server that closes with messages unanswered gets
        README's line, and input is read no further.
        """
        session = Session().serve(real_server())
        result = session.start()
        session.type(b"hello\n" * 3)
        session.exchange()
        self.assertEqual(len(session.output()), 3)
        session.type(b"hello\n" * 5000)
        [pump] = session.pumps
        pump.server.transport.loseConnection()  # type: ignore[attr-defined]
        session.exchange()
        self.assertEqual(self.successResultOf(result), FAILED)
        unanswered = Conversation.HIGH_WATER
        self.assertEqual(
            session.stderr.getvalue(),
            f"tsecho-client: localhost:21567 closed the connection with {unanswered} messages unanswered"
            " (is the server stopping?)\n",
        )
        self.assertEqual(session.input_transport.producerState, "stopped")

    def test_terminated(self) -> None:
        """
        Stopped by SIGTERM: C{terminated} and status 143.
        """
        session = Session()
        result = session.start(lambda reactor, options: Pending(), stop_signal=signal.SIGTERM)
        session.type(b"hello\n")
        [(trigger, args, kwargs)] = session.reactor.triggers["before"]["shutdown"]
        trigger(*args, **kwargs)
        self.assertEqual(self.successResultOf(result), TERMINATED)
        self.assertEqual(session.stderr.getvalue(), "tsecho-client: terminated\n")

    def test_bytes_bounded(self) -> None:
        """
        Long messages pause input at L{Conversation.HIGH_WATER_BYTES}
        unanswered bytes, well before the message count; the input held back
        is asked only once enough replies arrive.
        """
        asker = Pending()
        conversation = Conversation(asker, io.BytesIO())
        conversation.input = InputLines(conversation)
        transport = StringTransport()
        conversation.input.makeConnection(transport)
        half = Conversation.HIGH_WATER_BYTES // 2
        conversation.input.dataReceived((b"x" * half + b"\n") * 3)
        self.assertEqual((len(asker.asked), transport.producerState), (2, "paused"))
        asker.replies[0].callback(b"[x] x")
        self.assertEqual((len(asker.asked), transport.producerState), (2, "paused"))
        asker.replies[1].callback(b"[x] x")
        self.assertEqual(len(asker.asked), 3)

    def test_end_of_input_while_paused(self) -> None:
        """
        Input that ends while lines are held back by a pause ends only after
        those lines, once resumed.
        """
        got: list[bytes | None] = []

        class Sink:
            def message(self, message: bytes) -> None:
                got.append(message)

            def end_of_input(self, error: Any = None) -> None:
                got.append(None)

        lines = InputLines(Sink())
        lines.makeConnection(StringTransport())
        lines.dataReceived(b"a\n")
        lines.pauseProducing()
        lines.dataReceived(b"b\nc")
        lines.connectionLost(Failure(error.ConnectionDone()))
        self.assertEqual(got, [b"a"])
        lines.resumeProducing()
        self.assertEqual(got, [b"a", b"b", b"c", None])
