"""
The ways a C{tsecho-client} exchange can fail, each worth one line to a user.

Every error here is a L{ClientError}: C{str(error)} is the whole line that
C{tsecho-client} prints (after its own name), so the wording lives in one
place and tests can compare it exactly.
"""

from __future__ import annotations

from twisted.internet import error
from twisted.python.failure import Failure

__all__ = [  # the public ones, which tsecho.client re-exports
    "CannotConnectError",
    "ClientError",
    "ClosedEarlyError",
    "ClosedError",
    "NoReplyError",
    "ReplyTooLongError",
    "ServerClosedError",
]


def explain(reason: Failure) -> str:
    """
    Say in a few words why a connection attempt or a connection failed.

    @param reason: the failure Twisted reported.
    @return: C{connection refused}, C{unknown host}, ... or, for anything
        else, the failure's own message, on one line.
    """
    if reason.check(error.ConnectionRefusedError):
        return "connection refused"
    if reason.check(error.DNSLookupError, error.UnknownHostError):
        return "unknown host"
    if reason.check(error.NoRouteError):
        return "no route to host"
    if reason.check(error.TimeoutError):
        return "timed out"
    value = reason.value
    if isinstance(value, error.ConnectError) and value.args and value.args[0]:
        # Twisted words these as "An error occurred while connecting: 2: No
        # such file or directory."; the part after the error number says it.
        return one_line(str(value.args[0])).rstrip(".")
    return one_line(reason.getErrorMessage())


def one_line(text: str) -> str:
    """
    Squeeze C{text} onto one line.
    """
    return " ".join(text.split())


def seconds(amount: float) -> str:
    """
    Say C{amount} seconds: C{1 second}, C{0.5 seconds}, C{10 seconds}.
    """
    return "1 second" if amount == 1 else f"{amount:g} seconds"


class ClientError(Exception):
    """
    A failure that the client reports as one line: C{str(error)}.
    """


class CannotConnectError(ClientError):
    """
    No connection to the server could be made.
    """

    def __init__(self, target: str, why: str) -> None:
        super().__init__(f"cannot connect to {target}: {why}")


class NoReplyError(ClientError):
    """
    The server did not answer within the timeout.
    """

    def __init__(self, target: str, timeout: float, tries: int = 1) -> None:
        message = f"no reply from {target} within {seconds(timeout)}"
        if tries > 1:
            message += f" (tried {tries} times)"
        super().__init__(message)


class ClosedEarlyError(ClientError):
    """
    The connection ended before the server answered a message.
    """

    def __init__(self, target: str, reason: Failure) -> None:
        if reason.check(error.ConnectionDone):
            message = f"{target} closed the connection before answering"
        else:
            message = f"connection to {target} lost before answering: {explain(reason)}"
        super().__init__(message)


class ServerClosedError(ClientError):
    """
    A server that had answered several messages closed the connection with
    more unanswered: it is stopping (a one-line-per-connection server closes
    after its first reply).
    """

    def __init__(self, target: str, unanswered: int) -> None:
        messages = "1 message" if unanswered == 1 else f"{unanswered} messages"
        super().__init__(f"{target} closed the connection with {messages} unanswered (is the server stopping?)")


class ServerError(ClientError):
    """
    The server answered with an C{ERROR ...} line.
    """

    def __init__(self, line: bytes) -> None:
        self.line = line
        super().__init__(f"the server answered with an error: {one_line(line.decode('utf-8', 'replace'))}")


class ReplyTooLongError(ClientError):
    """
    The server sent a reply line longer than the client accepts.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(f"a reply was longer than {limit} bytes")


class ClosedError(ClientError):
    """
    The exchange was closed (by its user) before this message was answered.
    """

    def __init__(self) -> None:
        super().__init__("closed before the reply arrived")
