"""
The tsecho client: L{EchoSession} asks a timestamp echo server over a stream
(TCP, UNIX, TLS: any client endpoint), one L{EchoClient} per connection;
L{DatagramClient} asks it over UDP.  Both offer C{ask(message)}, which fires
with the reply line or fails with a L{ClientError}, and C{close()}.
L{main} is the C{tsecho-client} command (also C{python -m tsecho.client}).

Everything else lives in private modules: C{_stream} (the connection and
the session's connect, pipeline and reconnect policy), C{_datagram},
C{_errors} (the one-line errors), C{_tls} (fail-closed C{tls:} endpoints),
C{_input} (standard input) and C{_command} (the command line).  None of them
imports the server: what both sides share is in L{tsecho.wire}.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NoReturn

from tsecho.client import _errors
from tsecho.client._datagram import CannotSendError, DatagramClient
from tsecho.client._errors import *  # noqa: F403  # the ClientError family: _errors.__all__
from tsecho.client._stream import EchoClient, EchoSession

__all__ = ["CannotSendError", "DatagramClient", "EchoClient", "EchoSession", "main"]
__all__ += _errors.__all__


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """
    Run the C{tsecho-client} command with C{argv} (the process's arguments
    by default) and exit.

    The command line (its endpoints, TLS and standard input) is imported only
    here, so importing this package for L{EchoSession} stays light.
    """
    from tsecho.client._command import main

    main(argv)
