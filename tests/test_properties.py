"""
Property tests: random byte streams, cut into random chunks, against a model of the SPEC.

Every test drives a real L{TimestampEcho} through a L{StringTransport} with a
L{task.Clock}, and compares everything written, and whether the connection
was closed, with L{expected}: a few lines written straight from SPEC.md's
"Stream transports" section, not from the implementation.  Random pauses
(the transport's back-pressure) are thrown in between chunks.

Example counts come from the hypothesis profile (see C{tests/conftest.py}):
C{pytest --hypothesis-profile=long tests/test_properties.py} for a long run.
"""

from __future__ import annotations

import attrs
from hypothesis import example, given
from hypothesis import strategies as st
from twisted.internet import task
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from tsecho.protocol import ServerConfig, TimestampEchoFactory
from tsecho.timestamps import Timestamper

# SPEC: "Thu Nov 26 14:09:48 2026" is time.ctime() of this moment, in UTC.
NOW = 1795702188
PREFIX = b"[Thu Nov 26 14:09:48 2026] "
DEFAULT_LIMIT = 16384


def error_line(limit: int) -> bytes:
    """
    The SPEC's reply to a line over C{limit} bytes.
    """
    return b"ERROR line too long (limit %d bytes)\r\n" % (limit,)


@attrs.frozen
class Outcome:
    """
    What a client sees: every byte written to it, and whether the server closed.
    """

    written: bytes
    closed: bool


def expected(stream: bytes, limit: int, one_shot: bool = False, half_close: bool = False) -> Outcome:
    """
    The SPEC's answer to a client that sends C{stream} (and then shuts down
    its sending side, if C{half_close}).

    A line ends in C{\\n} or C{\\r\\n} and is echoed after the prefix with the
    same ending; a C{\\r} elsewhere is an ordinary byte.  A line longer than
    C{limit} (terminator excluded) gets the ERROR line, then a close; so does
    an unterminated run as soon as it can no longer be a line within the
    limit.  One-shot closes after the first reply.  On half-close the final
    unterminated line, if not empty, is answered with C{\\r\\n}, then close.
    """
    replies: list[bytes] = []
    start = 0
    while (end := stream.find(b"\n", start)) != -1:
        content = stream[start:end]
        start = end + 1
        line, eol = (content[:-1], b"\r\n") if content.endswith(b"\r") else (content, b"\n")
        if len(line) > limit:
            return Outcome(b"".join([*replies, error_line(limit)]), True)
        replies.append(PREFIX + line + eol)
        if one_shot:
            return Outcome(b"".join(replies), True)
    tail = stream[start:]
    if half_close:
        if len(tail) > limit:
            return Outcome(b"".join([*replies, error_line(limit)]), True)
        if tail:
            replies.append(PREFIX + tail + b"\r\n")
        return Outcome(b"".join(replies), True)
    # Still open: the tail may yet become a line, unless it is already too
    # long to be one (a last "\r" may be the start of a "\r\n" terminator).
    if len(tail) > limit + 1 or (len(tail) == limit + 1 and not tail.endswith(b"\r")):
        return Outcome(b"".join([*replies, error_line(limit)]), True)
    return Outcome(b"".join(replies), False)


def run(
    chunks: list[bytes],
    limit: int | None = None,
    one_shot: bool = False,
    half_close: bool = False,
    pauses: frozenset[int] = frozenset(),
) -> Outcome:
    """
    Feed C{chunks} to a fresh connection as a transport would, and report
    what it wrote and whether it closed.

    @param pauses: chunk indexes before which the transport's back-pressure
        toggles (pause, or resume), as when the client reads slowly.
    """
    config = ServerConfig() if limit is None else ServerConfig(max_line=limit)
    config = attrs.evolve(config, one_shot=one_shot)
    clock = task.Clock()
    clock.advance(NOW)
    factory = TimestampEchoFactory(config, Timestamper("ctime", utc=True), clock)
    protocol = factory.buildProtocol(None)
    assert protocol is not None
    transport = StringTransport()
    protocol.makeConnection(transport)
    paused = False
    for index, chunk in enumerate(chunks):
        if transport.disconnecting:
            break  # a closing transport reads no more
        if index in pauses:
            paused = not paused
            (protocol.pauseProducing if paused else protocol.resumeProducing)()
        protocol.dataReceived(chunk)
    if paused and not transport.disconnecting:
        protocol.resumeProducing()
    if half_close and not transport.disconnecting:
        protocol.readConnectionLost()
    outcome = Outcome(transport.value(), transport.disconnecting)
    protocol.connectionLost(Failure(ConnectionDone()))
    assert factory.connections == set()
    assert not clock.getDelayedCalls()
    return outcome


# Streams rich in what framing gets wrong: lone "\r", "\r\r\n", empty lines,
# NUL, bytes >= 0x80, and runs long enough to pass a small limit.
TOKENS = [b"\n", b"\r\n", b"\r", b"\r\r\n", b"\n\n", b"\x00", b"\xff\xfe", b"\x80", b"a", b"hello", b"[x] ", b"ERROR "]
pieces = st.one_of(
    st.sampled_from(TOKENS),
    st.binary(max_size=6),
    st.integers(0, 20).map(lambda n: b"x" * n),
)
streams = st.lists(pieces, max_size=30).map(b"".join)
limits = st.integers(1, 16)


def cut(data: st.DataObject, stream: bytes) -> tuple[list[bytes], frozenset[int]]:
    """
    Draw a way to cut C{stream} into chunks, and where to pause between them.
    """
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(stream) - 1))), label="cuts"))
    bounds = [0, *(c for c in cuts if c < len(stream)), len(stream)]
    chunks = [stream[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]
    pauses = data.draw(st.frozensets(st.integers(0, max(0, len(chunks) - 1))), label="pauses")
    return chunks, pauses


@given(stream=streams, limit=limits, data=st.data())
@example(stream=b"abc\rdef\r\r\nghi\n", limit=16, data=None)
@example(stream=b"\n\r\n\x00\xff\r\n", limit=1, data=None)
@example(stream=b"1234\n12345\r\nnever", limit=4, data=None)
def test_persistent(stream: bytes, limit: int, data: st.DataObject | None) -> None:
    """
    Persistent mode: one correct reply per complete line, in order, with the
    request's EOL; an over-long line gets the ERROR line after every earlier
    reply, then a close; and the result is the same however it is chunked.
    """
    chunks, pauses = cut(data, stream) if data is not None else ([bytes([b]) for b in stream], frozenset())
    want = expected(stream, limit)
    assert run(chunks, limit, pauses=pauses) == want
    assert run([stream], limit) == want


@given(stream=streams, limit=limits, data=st.data())
@example(stream=b"abc\r", limit=16, data=None)
@example(stream=b"1234\r", limit=4, data=None)
@example(stream=b"ok\n\r", limit=4, data=None)
@example(stream=b"ok\r\n", limit=4, data=None)
def test_half_close(stream: bytes, limit: int, data: st.DataObject | None) -> None:
    """
    Half-close: every line received is answered, a final unterminated line
    (a trailing C{\\r} is part of it) with C{\\r\\n}, then the server closes;
    the limit still applies to that last line.
    """
    chunks, pauses = cut(data, stream) if data is not None else ([bytes([b]) for b in stream], frozenset())
    want = expected(stream, limit, half_close=True)
    assert want.closed
    assert run(chunks, limit, half_close=True, pauses=pauses) == want
    assert run([stream], limit, half_close=True) == want


@given(stream=streams, limit=limits, half_close=st.booleans(), data=st.data())
@example(stream=b"first\r\nsecond\n", limit=16, half_close=False, data=None)
@example(stream=b"", limit=16, half_close=True, data=None)
def test_one_shot(stream: bytes, limit: int, half_close: bool, data: st.DataObject | None) -> None:
    """
    One-shot: only the first line is answered (or refused), then the server
    closes; with half-close and no complete line, the unterminated one is.
    """
    chunks, pauses = cut(data, stream) if data is not None else ([bytes([b]) for b in stream], frozenset())
    want = expected(stream, limit, one_shot=True, half_close=half_close)
    assert run(chunks, limit, one_shot=True, half_close=half_close, pauses=pauses) == want
    assert run([stream], limit, one_shot=True, half_close=half_close) == want


@given(
    before=st.lists(st.sampled_from([b"a\n", b"\r\n", b"\xff\x00\r\n"]), max_size=3).map(b"".join),
    length=st.sampled_from([DEFAULT_LIMIT - 1, DEFAULT_LIMIT, DEFAULT_LIMIT + 1, DEFAULT_LIMIT + 2]),
    ending=st.sampled_from([b"\n", b"\r\n", b"\r", b""]),
    after=st.sampled_from([b"", b"next\n", b"\r\n"]),
    half_close=st.booleans(),
    sizes=st.lists(st.integers(1, 6000), min_size=1, max_size=8),
)
def test_default_limit(
    *, before: bytes, length: int, ending: bytes, after: bytes, half_close: bool, sizes: list[int]
) -> None:
    """
    At the default limit of 16384 bytes: a line of exactly the limit is
    answered with either terminator, one byte more is refused, earlier
    replies come first; in chunks of any size.
    """
    stream = before + b"\x80" * length + ending + after
    chunks = []
    position = 0
    while position < len(stream):
        size = sizes[len(chunks) % len(sizes)]
        chunks.append(stream[position : position + size])
        position += size
    want = expected(stream, DEFAULT_LIMIT, half_close=half_close)
    assert run(chunks, half_close=half_close) == want


def test_model_examples() -> None:
    """
    The model itself, on hand-checked cases from the SPEC's wording, so a
    model bug cannot hide an implementation bug.
    """
    assert expected(b"hi\r\n\n", 4) == Outcome(PREFIX + b"hi\r\n" + PREFIX + b"\n", False)
    assert expected(b"a\rb\n", 4) == Outcome(PREFIX + b"a\rb\n", False)
    assert expected(b"a\r\r\n", 4) == Outcome(PREFIX + b"a\r\r\n", False)
    assert expected(b"1234\r\n12345\n", 4) == Outcome(PREFIX + b"1234\r\n" + error_line(4), True)
    assert expected(b"1234\r", 4) == Outcome(b"", False)
    assert expected(b"1234\r", 4, half_close=True) == Outcome(error_line(4), True)
    assert expected(b"12345", 4) == Outcome(error_line(4), True)
    assert expected(b"x\ny\n", 4, one_shot=True) == Outcome(PREFIX + b"x\n", True)
    assert expected(b"x\ry", 4, half_close=True) == Outcome(PREFIX + b"x\ry\r\n", True)
    assert expected(b"", 4, half_close=True) == Outcome(b"", True)
