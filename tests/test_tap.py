"""
Tests for L{tsecho.tap}: the options of C{twistd tsecho} and the service they build.
"""

from __future__ import annotations

from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from tsecho._startup import release_stderr
from tsecho.datagram import UDPAddress
from tsecho.protocol import ServerConfig, TimestampEchoFactory
from tsecho.service import TimestampEchoService
from tsecho.tap import Options, makeService
from tsecho.testing import make_factory

# Every option of SPEC.md's table.
SPEC_OPTIONS = (
    "--port",
    "--listen",
    "--udp",
    "--unix-datagram",
    "--one-shot",
    "--time-format",
    "--utc",
    "--max-line",
    "--max-connections",
    "--timeout",
    "--quiet",
)


def parse(*args: str) -> tuple[Options, MemoryReactorClock]:
    """
    Parse C{args} as C{twistd tsecho}'s command line, with a memory reactor.
    """
    reactor = MemoryReactorClock()
    options = Options(reactor=reactor)
    options.parseOptions(list(args))
    return options, reactor


def listened(options: Options, reactor: MemoryReactorClock) -> list[tuple[str, int, str]]:
    """
    Listen on each parsed endpoint; return (description, port, interface) per TCP listener.
    """
    factory = make_factory()
    for _, endpoint in options.endpoints():
        endpoint.listen(factory)
    descriptions = [d for d, _ in options.endpoints()]
    return [
        (description, port, interface) for description, (port, _, _, interface) in zip(descriptions, reactor.tcpServers)
    ]


class DefaultsTests(SynchronousTestCase):
    """
    With no arguments, every option has the SPEC's default.
    """

    def test_defaults(self) -> None:
        """
        The parsed defaults are the SPEC's.
        """
        options, _ = parse()
        self.assertIsNone(options["port"])
        self.assertEqual(options["listen"], [])
        self.assertIsNone(options["udp"])
        self.assertIsNone(options["unix-datagram"])
        self.assertFalse(options["one-shot"])
        self.assertEqual(options["time-format"], "ctime")
        self.assertFalse(options["utc"])
        self.assertEqual(options["max-line"], 16384)
        self.assertEqual(options["max-connections"], 10000)
        self.assertEqual(options["timeout"], 300)
        self.assertFalse(options["quiet"])

    def test_default_config(self) -> None:
        """
        The defaults give the default L{ServerConfig}.
        """
        options, _ = parse()
        self.assertEqual(options.config(), ServerConfig())

    def test_default_listener(self) -> None:
        """
        With neither C{--port} nor C{--listen}, the server listens on TCP port
        21567 on all interfaces.
        """
        options, reactor = parse()
        self.assertEqual(listened(options, reactor), [("tcp:21567", 21567, "")])


class OptionTests(SynchronousTestCase):
    """
    Each option, given on the command line, reaches the configuration.
    """

    def test_every_option(self) -> None:
        """
        Every option of the table is parsed into its setting.
        """
        options, _ = parse(
            "--port=1234",
            "--udp=1235",
            "--unix-datagram=/tmp/ts.dgram",
            "--one-shot",
            "--time-format=iso",
            "--utc",
            "--max-line=80",
            "--max-connections=3",
            "--timeout=2.5",
            "--quiet",
        )
        self.assertEqual(options["port"], 1234)
        self.assertEqual(options["udp"], UDPAddress("", 1235))
        self.assertEqual(options["unix-datagram"], "/tmp/ts.dgram")
        self.assertEqual(options["time-format"], "iso")
        self.assertTrue(options["utc"])
        self.assertEqual(
            options.config(),
            ServerConfig(max_line=80, max_connections=3, timeout=2.5, one_shot=True, quiet=True),
        )

    def test_short_options(self) -> None:
        """
        C{-p} is C{--port} and C{-q} is C{--quiet}.
        """
        options, _ = parse("-p", "99", "-q")
        self.assertEqual(options["port"], 99)
        self.assertTrue(options["quiet"])

    def test_strftime_and_zero_timeout(self) -> None:
        """
        A strftime pattern is a time format; a timeout of 0 is allowed.
        """
        options, _ = parse("--time-format", "%H:%M:%S", "--timeout", "0")
        self.assertEqual(options["time-format"], "%H:%M:%S")
        self.assertEqual(options.config().timeout, 0)

    def test_port_only(self) -> None:
        """
        C{--port N} alone listens on TCP port N on all interfaces.
        """
        options, reactor = parse("--port", "8000")
        self.assertEqual(listened(options, reactor), [("tcp:8000", 8000, "")])

    def test_port_zero(self) -> None:
        """
        C{--port 0} asks for any free port.
        """
        options, reactor = parse("--port", "0")
        self.assertEqual(listened(options, reactor), [("tcp:0", 0, "")])

    def test_listen_repeatable(self) -> None:
        """
        C{--listen} may be given many times; each one is a listener, in order,
        and none of them is the default port.
        """
        options, reactor = parse("--listen", "tcp:7001:interface=127.0.0.1", "--listen", "tcp6:7002:interface=\\:\\:1")
        self.assertEqual(
            listened(options, reactor),
            [("tcp:7001:interface=127.0.0.1", 7001, "127.0.0.1"), ("tcp6:7002:interface=\\:\\:1", 7002, "::1")],
        )

    def test_listen_unix(self) -> None:
        """
        C{--listen} takes any endpoint string, such as a UNIX socket.
        """
        options, reactor = parse("--listen", "unix:/tmp/tsecho-test.sock")
        factory = make_factory()
        [(description, endpoint)] = options.endpoints()
        endpoint.listen(factory)
        self.assertEqual(description, "unix:/tmp/tsecho-test.sock")
        self.assertEqual(reactor.unixServers[0][0], "/tmp/tsecho-test.sock")

    def test_port_and_listen(self) -> None:
        """
        C{--port} combined with C{--listen} gives both listeners, the port first.
        """
        options, reactor = parse("--listen", "tcp:7001:interface=127.0.0.1", "--port", "7000")
        self.assertEqual(
            listened(options, reactor),
            [("tcp:7000", 7000, ""), ("tcp:7001:interface=127.0.0.1", 7001, "127.0.0.1")],
        )


class GlobalReactorTests(SynchronousTestCase):
    """
    Without a reactor given, the options use the global one, as C{twistd} does.
    """

    def test_global_reactor(self) -> None:
        """
        C{Options()} parses endpoint strings with the global reactor.
        """
        from twisted.internet import reactor
        from twisted.internet.interfaces import IStreamServerEndpoint

        options = Options()
        options.parseOptions(["--port", "0"])
        [(description, endpoint)] = options.endpoints()
        self.assertEqual(description, "tcp:0")
        self.assertTrue(IStreamServerEndpoint.providedBy(endpoint))
        self.assertIs(options.reactor, reactor)


class BadValueTests(SynchronousTestCase):
    """
    A bad value is a usage error (which C{twistd} reports in one line).
    """

    BAD = (
        ("--port", "abc"),
        ("--port", "70000"),
        ("--port", "-1"),
        ("--udp", "abc"),
        ("--max-line", "-1"),
        ("--max-line", "0"),
        ("--max-line", "1.5"),
        ("--max-line", "many"),
        ("--max-connections", "0"),
        ("--timeout", "-1"),
        ("--timeout", "nan"),
        ("--timeout", "soon"),
        ("--time-format", "xx"),
        ("--time-format", "%Y\0"),
    )
    BAD_LISTENERS = (
        ("--listen", "foo:1"),
        ("--listen", "tcp:notaport"),
        ("--listen", ""),
        ("--metrics", "foo:1"),
    )

    def test_bad_values(self) -> None:
        """
        Each bad value raises L{usage.UsageError} with a message naming it.
        """
        for option, value in self.BAD:
            options = Options(reactor=MemoryReactorClock())
            e = self.assertRaises(usage.UsageError, options.parseOptions, [option, value])
            self.assertTrue(str(e), (option, value))

    def test_bad_listeners(self) -> None:
        """
        Options keep the descriptions as typed; L{makeService}, which builds
        every listener, raises L{usage.UsageError} naming a bad one.
        """
        for option, value in self.BAD_LISTENERS:
            options = Options(reactor=MemoryReactorClock())
            options.parseOptions([option, value])
            e = self.assertRaises(usage.UsageError, makeService, options)
            self.assertIn(f"{option} {value}" if value else "--listen needs", str(e))

    def test_bad_listener_under_twistd(self) -> None:
        """
        Under C{twistd} (options with a parent), a bad description ends the
        command with the same one line as any other usage error.
        """
        options = Options(reactor=MemoryReactorClock())
        options.parent = object()
        self.addCleanup(release_stderr)  # makeService keeps a copy of stderr for a daemon
        options.parseOptions(["--listen", "tcp:notaport"])
        e = self.assertRaises(SystemExit, makeService, options)
        self.assertEqual(
            str(e), "twistd tsecho: --listen tcp:notaport: notaport is not a number (see twistd tsecho --help)"
        )

    def test_listen_messages(self) -> None:
        """
        A bad C{--listen} says what is wrong, without Python's words for it.
        """
        cases = {
            "": "--listen needs an endpoint description, such as tcp:21567",
            "tcp:notaport": "--listen tcp:notaport: notaport is not a number",
        }
        for value, message in cases.items():
            options = Options(reactor=MemoryReactorClock())
            options.parseOptions(["--listen", value])
            e = self.assertRaises(usage.UsageError, makeService, options)
            self.assertEqual(str(e), message)

    def test_unknown_option(self) -> None:
        """
        An unknown option is a usage error.
        """
        self.assertRaises(usage.UsageError, Options(reactor=MemoryReactorClock()).parseOptions, ["--bogus"])

    def test_missing_value(self) -> None:
        """
        An option that needs a value and has none is a usage error.
        """
        self.assertRaises(usage.UsageError, Options(reactor=MemoryReactorClock()).parseOptions, ["--port"])


class RepeatedListenerTests(SynchronousTestCase):
    """
    Two listeners given the same description, or a repeated C{--port} or
    C{--udp}, are refused when the options are parsed, in one line, instead
    of failing at start-up as if another program held the port (or of the
    last one silently winning).
    """

    def refused(self, *args: str) -> str:
        """
        The usage error C{args} give, with the C{twistd tsecho: } prefix a
        command gets.
        """
        options = Options(reactor=MemoryReactorClock())
        options.parent = usage.Options()  # as the twistd subcommand
        return str(self.assertRaises(SystemExit, options.parseOptions, list(args)))

    def test_same_description(self) -> None:
        """
        The same description twice, C{--port P} and C{tcp:P}, or C{--metrics}
        on a stream listener's description (the default port's included).
        """
        own = ": each listener needs a port (or socket path) of its own (see twistd tsecho --help)"
        for args, message in (
            (("--listen", "tcp:7000", "--listen", "tcp:7000"), "--listen tcp:7000 is given twice"),
            (
                ("--listen", "unix:/tmp/a.sock", "--listen", "unix:/tmp/a.sock"),
                "--listen unix:/tmp/a.sock is given twice",
            ),
            (("--port", "7000", "--listen", "tcp:7000"), "--listen tcp:7000 is also given by --port 7000"),
            (("--listen", "tcp:7000", "-p", "7000"), "--listen tcp:7000 is also given by --port 7000"),
            (
                ("--listen", "tcp:7000", "--metrics", "tcp:7000"),
                "--metrics tcp:7000 is also given by --listen tcp:7000",
            ),
            (("--port", "7000", "--metrics", "tcp:7000"), "--metrics tcp:7000 is also given by --port 7000"),
            (("--metrics", "tcp:21567"), "--metrics tcp:21567 is also given by the default port 21567"),
        ):
            self.assertEqual(self.refused(*args), f"twistd tsecho: {message}{own}", args)

    def test_different_or_any_port(self) -> None:
        """
        Port 0 (any free port) may be given many times; C{tcp:P} with an
        interface is another description than C{--port P} (a clash there is
        found when listening); without C{--listen}, C{--port} replaces the
        default port.
        """
        for args in (
            ("--port", "0", "--listen", "tcp:0", "--listen", "tcp:0", "--metrics", "tcp:0"),
            ("--listen", "tcp6:0", "--listen", "ssl:port=0", "--listen", "haproxy:tcp:0"),
            ("--listen", "tcp:interface=127.0.0.1:port=0", "--listen", "tcp:interface=127.0.0.1:port=0"),
            ("--listen", "tcp:00", "--listen", "tcp:00"),
            ("--port", "7000", "--listen", "tcp:7000:interface=127.0.0.1"),
            ("--port", "7000", "--metrics", "tcp:21567"),
            ("--listen", "tcp:7000", "--metrics", "tcp:21567"),
        ):
            options, _ = parse(*args)  # no usage error
            self.assertEqual(
                options["listen"], [value for option, value in zip(args, args[1:]) if option == "--listen"]
            )

    def test_repeated_port_or_udp(self) -> None:
        """
        C{--port} (or C{-p}) and C{--udp} each name one listener: given twice,
        both values are named.
        """
        self.assertEqual(
            self.refused("-p", "7000", "--port", "7001"),
            "twistd tsecho: --port is given twice (7000 and 7001): give it once, and --listen tcp:PORT for each "
            "other port (see twistd tsecho --help)",
        )
        self.assertEqual(
            self.refused("--udp", "7000", "--udp", "127.0.0.1:7001"),
            "twistd tsecho: --udp is given twice (7000 and 127.0.0.1:7001): tsecho answers datagrams on one UDP "
            "address (see twistd tsecho --help)",
        )

    def test_port_value(self) -> None:
        """
        C{--port} still takes 0 to 65535 and says so in its help, with its default.
        """
        self.assertEqual(parse("--port", "65535")[0]["port"], 65535)
        self.assertEqual(
            self.refused("--port", "65536"),
            "twistd tsecho: '65536' is not a port number (0 to 65535) (see twistd tsecho --help)",
        )
        self.assertIn(
            "TCP port on all IPv4 interfaces; may be combined with --listen [default: 21567 when no --listen]. "
            "Must be a port number, 0 to 65535.",
            " ".join(str(Options()).split()),
        )


class UDPAddressTests(SynchronousTestCase):
    """
    C{--udp} takes C{PORT} (every IPv4 interface), C{ADDRESS:PORT} or
    C{[IPV6-ADDRESS]:PORT}; anything else is a one-line usage error.
    """

    def test_forms(self) -> None:
        """
        Each form gives the interface and port, and L{makeService} a UDP
        listener on that interface.
        """
        for value, address, description in (
            ("21567", UDPAddress("", 21567), "udp:21567"),
            ("0", UDPAddress("", 0), "udp:0"),
            ("127.0.0.1:5000", UDPAddress("127.0.0.1", 5000), "udp:5000:interface=127.0.0.1"),
            ("[::1]:65535", UDPAddress("::1", 65535), "udp:65535:interface=::1"),
            ("[::]:53", UDPAddress("::", 53), "udp:53:interface=::"),
            ("0.0.0.0:7", UDPAddress("0.0.0.0", 7), "udp:7:interface=0.0.0.0"),
        ):
            options, _ = parse("--port", "0", "--udp", value)
            self.assertEqual(options["udp"], address)
            [child] = list(makeService(options))  # type: ignore[call-overload]
            self.assertEqual(child.description, description)

    def test_bad_values(self) -> None:
        """
        A bad C{--udp} is a usage error naming the value, what is wrong and
        the forms allowed; as a C{twistd} command, one line.
        """
        forms = "give PORT, ADDRESS:PORT or [IPV6-ADDRESS]:PORT"
        for value, why in (
            ("abc", f"'abc' is not a port number (0-65535); {forms}"),
            ("70000", f"'70000' is not a port number (0-65535); {forms}"),
            ("-1", f"'-1' is not a port number (0-65535); {forms}"),
            ("127.0.0.1:", f"'' is not a port number (0-65535); {forms}"),
            ("localhost:5", f"'localhost' is not an IP address; {forms}"),
            ("999.1.1.1:5", f"'999.1.1.1' is not an IP address; {forms}"),
            (":5", f"'' is not an IP address; {forms}"),
            ("::1:5", "put an IPv6 address in brackets: [ADDRESS]:PORT, e.g. [::1]:21567"),
            ("[::1]", "write an IPv6 address and its port as [ADDRESS]:PORT, e.g. [::1]:21567"),
            ("[127.0.0.1]:5", "brackets are for IPv6 addresses; write an IPv4 one as ADDRESS:PORT"),
        ):
            options = Options(reactor=MemoryReactorClock())
            e = self.assertRaises(usage.UsageError, options.parseOptions, ["--udp", value])
            self.assertEqual(str(e), f"--udp {value!r}: {why}")
            options = Options(reactor=MemoryReactorClock())
            options.parent = usage.Options()  # as the twistd subcommand
            exit_ = self.assertRaises(SystemExit, options.parseOptions, ["--udp", value])
            self.assertEqual(str(exit_), f"twistd tsecho: --udp {value!r}: {why} (see twistd tsecho --help)")

    def test_help(self) -> None:
        """
        The help shows every form, on lines without runs of spaces.
        """
        text = " ".join(str(Options()).split())
        self.assertIn(
            "--udp= Also answer UDP datagrams on PORT (every IPv4 interface), ADDRESS:PORT or [IPV6-ADDRESS]:PORT"
            " [default: off]",
            text,
        )


class HelpTests(SynchronousTestCase):
    """
    C{twistd tsecho --help} documents every option and its default.
    """

    def test_every_option_listed(self) -> None:
        """
        The help names every option of the SPEC's table.
        """
        text = str(Options())
        for name in SPEC_OPTIONS:
            self.assertIn(name, text)

    def test_defaults_listed(self) -> None:
        """
        The help gives the defaults of the options that have one.
        """
        text = " ".join(str(Options()).split())
        for default in ("[default: 21567", "[default: ctime]", "[default: 16384]", "[default: 10000]", "[default: 300"):
            self.assertIn(default, text)


class MakeServiceTests(SynchronousTestCase):
    """
    L{makeService} builds the server the options describe.
    """

    def test_service(self) -> None:
        """
        The service is a L{TimestampEchoService} whose factory has the
        parsed configuration and uses the options' reactor as its clock.
        """
        options, reactor = parse("--port", "0", "--max-line", "5", "--time-format", "iso", "--utc")
        service = makeService(options)
        assert isinstance(service, TimestampEchoService)
        self.assertIsInstance(service.factory, TimestampEchoFactory)
        self.assertEqual(service.factory.config, ServerConfig(max_line=5))
        self.assertIs(service.factory.clock, reactor)
        self.assertIs(service.clock, reactor)
        self.assertEqual([d for d, _ in service.endpoints], ["tcp:0"])
        self.assertEqual(service.factory.timestamper.time_format, "iso")
        self.assertTrue(service.factory.timestamper.utc)

    def test_datagram_children(self) -> None:
        """
        C{--udp} and C{--unix-datagram} add one child service each, named
        by their listener; without them there is none.
        """
        options, _ = parse("--port", "0")
        self.assertEqual(list(makeService(options)), [])  # type: ignore[call-overload]
        options, _ = parse("--port", "0", "--udp", "0", "--unix-datagram", "/tmp/tsecho-test.dgram")
        children = list(makeService(options))  # type: ignore[call-overload]
        self.assertEqual([child.description for child in children], ["udp:0", "unix-datagram:/tmp/tsecho-test.dgram"])

    def test_service_listens(self) -> None:
        """
        Starting the service listens on its endpoints with its factory.
        """
        options, reactor = parse("--port", "0")
        service = makeService(options)
        assert isinstance(service, TimestampEchoService)
        service.privilegedStartService()
        service.startService()
        self.assertEqual(reactor.tcpServers[0][:2], (0, service.factory))
        self.successResultOf(service.stopService())
