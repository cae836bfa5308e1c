"""
Tests for L{tsecho._logtext.escape}: what a client controls reaches the log
as one line of visible characters.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.protocol import connectionDone
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from tsecho._logtext import describe_address, escape
from tsecho.testing import make_factory

HOSTILE = "/tmp/x\n2026-11-29T00:00:00+0000 [tsecho.protocol#info] forged\x1b[2J\r\x00\x7f\u2028"
ESCAPED = "/tmp/x\\n2026-11-29T00:00:00+0000 [tsecho.protocol#info] forged\\x1b[2J\\r\\x00\\x7f\\u2028"


class EscapeTests(SynchronousTestCase):
    """
    L{escape} writes control characters, invisible characters and the
    backslash as Python escapes, and leaves the rest alone.
    """

    def test_examples(self) -> None:
        """
        Newline, ESC, CR, NUL, DEL and U+2028 are escaped; text, spaces
        and non-ASCII letters are kept; a backslash is doubled.
        """
        self.assertEqual(escape(HOSTILE), ESCAPED)
        self.assertEqual(escape("plain text, café"), "plain text, café")
        self.assertEqual(escape("a\\nb"), "a\\\\nb")

    def test_bytes(self) -> None:
        """
        Bytes are read as UTF-8, and bytes that are not UTF-8 shown as C{\\xNN}.
        """
        self.assertEqual(escape(HOSTILE.encode()), ESCAPED)
        self.assertEqual(escape(b"caf\xc3\xa9\xff\\x"), "café\\xff\\\\x")

    @given(st.one_of(st.text(), st.binary()))
    def test_one_visible_line(self, text: str | bytes) -> None:
        """
        Whatever goes in, what comes out is printable: no line break, no ESC.
        """
        self.assertTrue(escape(text).isprintable())

    def test_peers(self) -> None:
        """
        L{describe_address} escapes host names and UNIX paths.
        """
        self.assertEqual(describe_address(UNIXAddress(HOSTILE.encode())), ESCAPED)
        self.assertEqual(describe_address(UNIXAddress(HOSTILE)), ESCAPED)
        self.assertEqual(describe_address(IPv4Address("TCP", "a\nb", 1)), "a\\nb:1")
        self.assertEqual(describe_address(IPv6Address("TCP", "::1", 1)), "[::1]:1")

    def test_unix_peer_logged_escaped(self) -> None:
        """
        A UNIX client that bound its socket to a path with a newline and an
        ESC sequence is logged on one line, escaped.
        """
        protocol = make_factory().buildProtocol(UNIXAddress(None))
        assert protocol is not None
        with capturedLogs() as events:
            protocol.makeConnection(StringTransport(peerAddress=UNIXAddress(HOSTILE.encode())))
            protocol.connectionLost(connectionDone)
        [text] = [formatEvent(e) for e in events]
        self.assertTrue(text.startswith(f"connection from {ESCAPED} closed after 0 lines (client closed)"), text)
