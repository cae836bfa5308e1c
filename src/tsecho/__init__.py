"""
tsecho: the timestamp echo server of I{Core Python Programming}, done in Twisted.

The public API (importing C{tsecho} loads none of it):

  - L{tsecho.client}: C{EchoSession}, C{EchoClient}, C{DatagramClient}, the
    C{ClientError} family, C{main} (the C{tsecho-client} command);
  - L{tsecho.testing}: the real client against the real server in memory
    (C{MemoryNetwork}) and the server protocol on a C{StringTransport};
  - L{tsecho.wire}: what both ends of the wire agree on;
  - L{tsecho.protocol}: C{ServerConfig}, C{TimestampEcho}, C{TimestampEchoFactory};
    L{tsecho.timestamps}: C{Timestamper}, which the factory takes;
    L{tsecho.datagram}: C{TimestampDatagram}, its datagram counterpart;
  - L{tsecho.framing}: C{LineFramer} (its contract is in the README);
  - L{tsecho.listeners}: C{server_from_string};
  - L{tsecho.logs}: the observers for C{twistd --logger}
    (C{json_observer}, C{text_observer});
  - L{tsecho.tap}: C{twistd tsecho}'s C{Options} and C{makeService}.

Modules whose names start with C{_} are private; so are C{service},
C{metrics}, C{workers} and C{worker}, the machinery behind C{twistd tsecho}.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tsecho")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "__version__",
    "client",
    "datagram",
    "framing",
    "listeners",
    "logs",
    "protocol",
    "tap",
    "testing",
    "timestamps",
    "wire",
]
