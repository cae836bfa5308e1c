"""
C{tsecho-client}: send messages to a timestamp echo server, print the replies.

    tsecho-client [--host H] [--port P | --connect DESCRIPTION] [--udp] [--timeout S] [MESSAGE ...]

Messages come from the command line or, with none there, from standard input
(one per line, until the end or an empty line).  Each reply is printed as it
arrives, one per line on standard output, and nothing else goes there; a
C{> } prompt goes to standard error when standard input is a terminal.  The
exit status is 0 when every message was answered; otherwise one line on
standard error says what went wrong and the status is 1 (2 for a bad command
line).

The work is done by L{tsecho.client.EchoSession} (streams) and
L{tsecho.client.DatagramClient} (C{--udp}); this module only wires
them to the command line and the standard streams, all of which L{run}
takes as arguments so that tests need no terminal and no network.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO, NoReturn, TextIO
from typing import Protocol as TypingProtocol

import attrs
from twisted.internet import defer, endpoints
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.interfaces import IListeningPort, IReactorCore
from twisted.internet.protocol import Factory
from twisted.internet.task import react
from twisted.logger import Logger, LogLevel
from twisted.python import usage
from twisted.python.failure import Failure

from tsecho import __version__
from tsecho._cli import discard_stdout, port_number, stdout_may_close, usage_error_text
from tsecho._endpoint_errors import explain_description_error
from tsecho.client._datagram import DatagramClient
from tsecho.client._errors import ClientError, ServerError, one_line
from tsecho.client._input import InputLines, StdinReader
from tsecho.client._stream import EchoClient, EchoSession
from tsecho.client._tls import client_from_string
from tsecho.wire import DEFAULT_PORT, ERROR_PREFIX, LF, host_port

PROGRAM = "tsecho-client"
DEFAULT_TIMEOUT = 10.0
PROMPT = "> "

#: Exit statuses.
OK, FAILED, USAGE, INTERRUPTED, TERMINATED = 0, 1, 2, 130, 143

log = Logger()


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a number of seconds") from None
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"{value!r} is not a positive number of seconds")
    return seconds


_seconds.coerceDoc = "Must be a positive number of seconds."  # type: ignore[attr-defined]


class ClientOptions(usage.Options):
    """
    The command line of C{tsecho-client}.

    @ivar messages: the messages given on the command line, as bytes.
    """

    synopsis = f"Usage: {PROGRAM} [--host H] [--port P | --connect DESCRIPTION] [--udp] [--timeout S] [MESSAGE ...]"
    longdesc = (
        "Send each MESSAGE (or, with none, each line of standard input until its end or an empty line) "
        "to a timestamp echo server and print each reply, one per line. Exit status: 0 when every message "
        "was answered (or when standard output closes early, as with | head), 1 on any failure (one line on "
        "standard error), 2 for a bad command line, 130 when interrupted, 143 when terminated (SIGTERM)."
    )
    optFlags = [["udp", None, "Send each message as one UDP datagram (sent once more if no reply comes in time)."]]
    optParameters: list[list[Any]] = [
        ["host", None, None, "The server's host name or address [default: localhost]."],
        ["port", None, None, f"The server's port [default: {DEFAULT_PORT}]", port_number],
        ["connect", None, None, "A Twisted client endpoint: tcp:host=H:port=P, unix:path=P, tls:host=H:port=P, ..."],
        ["timeout", None, DEFAULT_TIMEOUT, "Seconds to wait for each reply", _seconds],
    ]

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[bytes] = []

    def opt_version(self) -> NoReturn:
        """
        Display the version and exit.
        """
        print(f"{PROGRAM} {__version__}")
        raise SystemExit(0)

    def parseArgs(self, *messages: str) -> None:
        for message in messages:
            encoded = os.fsencode(message)
            if LF in encoded:
                raise usage.UsageError("a MESSAGE cannot contain a line break")
            self.messages.append(encoded)

    def postOptions(self) -> None:
        if self["connect"] is not None:
            if self["host"] is not None or self["port"] is not None:
                raise usage.UsageError("--connect replaces --host and --port; give one or the other")
            if self["udp"]:
                raise usage.UsageError("--udp takes --host and --port, not --connect")
        if self["host"] is None:
            self["host"] = "localhost"
        if self["port"] is None:
            self["port"] = DEFAULT_PORT

    def target(self) -> str:
        """
        Name the server for messages: C{localhost:21567}, C{[::1]:21567} or
        the C{--connect} description.
        """
        if self["connect"] is not None:
            return str(self["connect"])
        name = host_port(str(self["host"]), int(self["port"]))
        return f"{name} (UDP)" if self["udp"] else name


class Asker(TypingProtocol):
    """
    What the command needs of a session: L{EchoSession} and L{DatagramClient}.
    """

    def ask(self, message: bytes) -> defer.Deferred[bytes]:
        """
        Send C{message}; fires with its reply.
        """

    def close(self) -> defer.Deferred[None]:
        """
        Stop; fires once closed.
        """


class BadEndpointError(ClientError):
    """
    The C{--connect} description is not one Twisted understands.
    """

    def __init__(self, description: str, why: str) -> None:
        super().__init__(f"bad --connect description {description}: {why}")


def open_asker(reactor: Any, options: ClientOptions) -> Asker:
    """
    Build the session C{options} ask for: a datagram client with C{--udp},
    otherwise a stream session over C{--connect}'s endpoint or a
    L{endpoints.HostnameEndpoint} for C{--host}/C{--port} (IPv6 and IPv4).

    @raise BadEndpointError: if the C{--connect} description cannot be parsed.
    """
    timeout = float(options["timeout"])
    target = options.target()
    if options["udp"]:
        return DatagramClient(
            lambda client: defer.ensureDeferred(
                _open_datagram(reactor, str(options["host"]), int(options["port"]), client)
            ),
            reactor,
            target,
            timeout,
        )
    if options["connect"] is not None:
        description = str(options["connect"])
        try:
            endpoint = client_from_string(reactor, description)
        except ClientError:
            raise  # a file it names cannot be used: that error's own line
        except Exception as e:  # Twisted raises ValueError, KeyError, TypeError... for bad strings
            raise BadEndpointError(description, explain_description_error(description, e, client=True)) from None
    else:
        endpoint = endpoints.HostnameEndpoint(reactor, str(options["host"]), int(options["port"]))
    factory = Factory.forProtocol(EchoClient)
    return EchoSession(lambda: endpoint.connect(factory), reactor, target, timeout)


async def _open_datagram(reactor: Any, host: str, port: int, client: DatagramClient) -> IListeningPort:
    if isIPv6Address(host):
        address, interface = host, "::"
    elif isIPAddress(host):
        address, interface = host, ""
    else:
        address, interface = await reactor.resolve(host), ""
    listening: IListeningPort = reactor.listenUDP(0, client, interface=interface)
    listening.connect(address, port)  # type: ignore[attr-defined]
    return listening


@attrs.define
class Terminal:
    """
    The standard streams, as the command uses them.

    @ivar stdout: where replies go, as bytes.
    @ivar stderr: where the error line and the prompt go.
    @ivar interactive: whether standard input is a terminal (then prompt).
    @ivar read_input: starts feeding standard input to an L{InputLines}.
    @ivar stdout_closed: called when standard output's reader has gone, to
        keep the interpreter's last flush from failing again.
    @ivar stop_signal: which signal is stopping the process, if any.
    """

    stdout: BinaryIO
    stderr: TextIO
    interactive: bool
    read_input: Callable[[InputLines], None]
    stdout_closed: Callable[[], None] = lambda: None
    stop_signal: Callable[[], int | None] = lambda: None


class InterruptError(ClientError):
    """
    The reactor was stopped (Ctrl-C) before the conversation ended.
    """

    status = INTERRUPTED

    def __init__(self, what: str = "interrupted") -> None:
        super().__init__(what)


class TerminatedError(InterruptError):
    """
    SIGTERM stopped the reactor before the conversation ended.
    """

    status = TERMINATED

    def __init__(self) -> None:
        super().__init__("terminated")


class StopSignal:
    """
    Remember which signal (SIGINT, SIGTERM) stopped the process: a handler in
    front of each of the reactor's, which it then calls.

    @ivar number: the signal received, if any.
    """

    def __init__(self) -> None:
        self.number: int | None = None

    def watch(self) -> None:
        """
        Wrap the handlers the reactor installed (call once it is running).
        """
        for number in (signal.SIGINT, signal.SIGTERM):
            handler = signal.getsignal(number)
            if callable(handler):
                signal.signal(number, self._chain(handler))

    def _chain(self, handler: Callable[[int, Any], Any]) -> Callable[[int, Any], None]:
        def received(number: int, frame: Any) -> None:
            self.number = number
            handler(number, frame)

        return received


class OutputError(ClientError):
    """
    Standard output could not be written.
    """

    def __init__(self, why: str) -> None:
        super().__init__(f"cannot write to standard output: {why}")


class Conversation:
    """
    Ask each message in turn, print each reply in order, and settle how the
    command ends: L{done} fires with L{None} when every message was answered
    and the input has ended, or with the first L{ClientError}.

    While many messages (L{HIGH_WATER}) or bytes (L{HIGH_WATER_BYTES}) are
    unanswered, the input is paused, so piping a large file (or C{yes}) in
    does not queue it in memory; it resumes once both are down to their low
    water marks.

    @ivar reader_gone: standard output's reader closed it (C{| head}): the
        conversation ended there, and that is no failure.
    @ivar at_prompt: a prompt was written and no line has ended it yet.
    """

    HIGH_WATER = 1000
    LOW_WATER = 100
    HIGH_WATER_BYTES = 1024 * 1024
    LOW_WATER_BYTES = 128 * 1024

    def __init__(self, asker: Asker, stdout: BinaryIO, prompt: Callable[[], None] | None = None) -> None:
        self._asker = asker
        self._stdout = stdout
        self._prompt = prompt
        self.done: defer.Deferred[ClientError | None] = defer.Deferred()
        self.input: InputLines | None = None
        self._outstanding = 0
        self._outstanding_bytes = 0
        self._input_ended = False
        self._finished = False
        self._paused = False
        self.reader_gone = False
        self.at_prompt = False

    def start(self) -> None:
        """
        Ready for input: prompt, if prompting.
        """
        self._show_prompt()

    def _show_prompt(self) -> None:
        if self._prompt is not None:
            self._prompt()
            self.at_prompt = True

    def message(self, message: bytes) -> None:
        """
        Send one more message.
        """
        self.at_prompt = False
        if self._finished:
            return
        self._outstanding += 1
        self._outstanding_bytes += len(message)
        size = (len(message),)
        self._asker.ask(message).addCallbacks(self._replied, self._failed, callbackArgs=size, errbackArgs=size)
        full = self._outstanding >= self.HIGH_WATER or self._outstanding_bytes >= self.HIGH_WATER_BYTES
        if full and not self._paused and self.input is not None and self.input.producer is not None:
            self._paused = True
            self.input.pauseProducing()

    def end_of_input(self, error: ClientError | None = None) -> None:
        """
        No more messages; end once the outstanding ones are answered.
        """
        self._input_ended = True
        if error is not None:
            self._finish(error)
        elif not self._outstanding:
            self._finish(None)

    def interrupt(self, error: ClientError | None = None) -> None:
        """
        The process is being stopped: end now, with C{error} (by default
        L{InterruptError}).
        """
        self._finish(error if error is not None else InterruptError())

    def _answered(self, size: int) -> None:
        self._outstanding -= 1
        self._outstanding_bytes -= size

    def _replied(self, reply: bytes, size: int) -> None:
        self._answered(size)
        if self._finished:
            return
        try:
            self._stdout.write(reply + b"\n")
            self._stdout.flush()
        except BrokenPipeError:
            self.reader_gone = True
            self._finish(None)
            return
        except OSError as e:
            self._finish(OutputError(e.strerror or str(e)))
            return
        if reply.startswith(ERROR_PREFIX):
            self._finish(ServerError(reply))
        elif self._input_ended:
            if not self._outstanding:
                self._finish(None)
        elif not self._outstanding:
            self._show_prompt()
        if (
            self._paused
            and self._outstanding <= self.LOW_WATER
            and self._outstanding_bytes <= self.LOW_WATER_BYTES
            and not self._finished
        ):
            self._paused = False
            assert self.input is not None
            self.input.resumeProducing()

    def _failed(self, failure: Failure, size: int) -> None:
        self._answered(size)
        if self._finished:
            return  # only the first failure is worth a line
        if isinstance(failure.value, ClientError):
            self._finish(failure.value)
        else:
            log.failure("unexpected failure", failure, log_level=LogLevel.error)
            self._finish(ClientError(f"unexpected error: {one_line(failure.getErrorMessage())}"))

    def _finish(self, error: ClientError | None) -> None:
        if self._finished:
            return
        self._finished = True
        if self.input is not None and not self.input.ended:
            self.input.stop()
        self.done.callback(error)


CLOSE_GRACE = 5.0


async def run(
    reactor: Any,
    options: ClientOptions,
    terminal: Terminal,
    make_asker: Callable[[Any, ClientOptions], Asker] = open_asker,
) -> int:
    """
    Hold the conversation C{options} describe and return the exit status,
    having written at most one line to C{terminal.stderr} (besides prompts).

    @param reactor: the reactor (its clock and shutdown triggers are used).
    @param terminal: the standard streams.
    @param make_asker: builds the session; L{open_asker} unless testing.
    """
    try:
        error, status = await _converse(reactor, options, terminal, make_asker)
    except Exception as e:  # a bug: still one line, never a traceback
        log.failure("tsecho-client failed", log_level=LogLevel.error)
        error, status = ClientError(f"unexpected error: {one_line(repr(e))}"), FAILED
    if error is not None:
        terminal.stderr.write(f"{PROGRAM}: {error}\n")
        terminal.stderr.flush()
    return status


def _start(reactor: Any, asker: Asker, options: ClientOptions, terminal: Terminal) -> Conversation:
    """
    Start the conversation with C{asker}: prompt if standard input is a
    terminal (and no message was given), and give it the messages of the
    command line, or else standard input's lines.
    """

    def prompt() -> None:
        terminal.stderr.write(PROMPT)
        terminal.stderr.flush()

    interactive = terminal.interactive and not options.messages
    conversation = Conversation(asker, terminal.stdout, prompt if interactive else None)
    # Stopped early (Ctrl-C, SIGTERM): say so, and do not exit 0.  (Once the
    # conversation is over, interrupting it does nothing.)
    reactor.addSystemEventTrigger(
        "before",
        "shutdown",
        lambda: conversation.interrupt(TerminatedError() if terminal.stop_signal() == signal.SIGTERM else None),
    )
    if options.messages:
        for message in options.messages:
            conversation.message(message)
        conversation.end_of_input()
    else:
        conversation.input = InputLines(conversation)
        conversation.start()
        terminal.read_input(conversation.input)
    return conversation


async def _converse(
    reactor: Any,
    options: ClientOptions,
    terminal: Terminal,
    make_asker: Callable[[Any, ClientOptions], Asker],
) -> tuple[ClientError | None, int]:
    try:
        asker = make_asker(reactor, options)
    except BadEndpointError as e:
        return e, USAGE
    except ClientError as e:  # e.g. a TLS trust-roots directory that cannot be used
        return e, FAILED
    conversation = _start(reactor, asker, options, terminal)
    error = await conversation.done
    if conversation.at_prompt:
        terminal.stderr.write("\n")  # after "> " and the terminal's ^C or ^D
    if conversation.reader_gone:
        terminal.stdout_closed()
    closing = asker.close()
    if isinstance(error, InterruptError):
        return error, error.status  # the reactor is stopping: no time to wait
    try:
        await closing.addTimeout(CLOSE_GRACE, reactor)
    except defer.TimeoutError:
        log.debug("connections still closing after {grace} seconds; leaving anyway", grace=CLOSE_GRACE)
    return error, OK if error is None else FAILED


def _react_main(reactor: IReactorCore, options: ClientOptions, terminal: Terminal) -> defer.Deferred[None]:
    stop_signal = StopSignal()
    reactor.callWhenRunning(stop_signal.watch)  # after the reactor installs its handlers
    terminal.stop_signal = lambda: stop_signal.number

    def exit_with(status: int) -> None:
        if status:
            raise SystemExit(status)

    return defer.ensureDeferred(run(reactor, options, terminal)).addCallback(exit_with)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """
    The C{tsecho-client} command.
    """
    options = ClientOptions()
    try:
        with stdout_may_close():
            options.parseOptions(argv)
    except usage.UsageError as e:
        sys.stderr.write(f"{PROGRAM}: {usage_error_text(e)} (see --help)\n")
        raise SystemExit(USAGE) from None

    def read_stdin(lines: InputLines) -> None:
        from twisted.internet import reactor

        StdinReader(reactor).start(lines)  # type: ignore[arg-type]

    terminal = Terminal(sys.stdout.buffer, sys.stderr, _isatty(sys.stdin), read_stdin, discard_stdout)
    react(_react_main, [options, terminal])


def _isatty(stream: TextIO | None) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (OSError, ValueError):
        return False
