"""
Stream listeners from endpoint descriptions: L{server_from_string}.

Twisted's L{endpoints.serverFromString} builds every listener, with two
workarounds for the SPEC's half-close rule, each in its own private module
because it relies on Twisted internals:

  - C{haproxy:INNER}: L{tsecho._proxy} (Twisted's private
    C{twisted.protocols.haproxy} modules);
  - C{ssl:}, also as C{haproxy:ssl:}: L{tsecho._tls} (a private method of
    Twisted's TLS protocol).

A workaround's module is imported only when a description asks for it, so
nothing else (C{twistd tsecho --listen tcp:...} included) depends on those
internals.  Before it is used, its C{missing_internals()} checks that what
it relies on is still there; if its import fails or something is missing,
that kind of listener is Twisted's own endpoint, with one warning logged
(naming the Twisted version and what is lost), and the server still starts.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from typing import Any, cast

import twisted
from twisted.internet import endpoints
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import Logger

HAPROXY = "haproxy:"
SSL = "ssl:"

_LOST = {
    SSL: "half-close over TLS (replies owed when a client ends with close_notify or a TCP FIN may be lost)",
    HAPROXY: (
        "half-close behind PROXY (replies owed at a client's end of input are lost), the client's own "
        "address in connection log lines, the PROXY header timeout and the strict PROXY v1 checks"
    ),
}
"""
What each kind of listener loses when its workaround cannot be used.
"""

log = Logger()


def server_from_string(reactor: Any, description: str) -> IStreamServerEndpoint:
    """
    Like L{endpoints.serverFromString}, but C{haproxy:INNER} listeners keep
    half-close and log the client the PROXY header names, and C{ssl:} ones
    (as C{INNER} too) answer what arrived before a client's C{close_notify}
    or TCP FIN: each when the running Twisted allows it.

    @param reactor: what the endpoints listen with: TLS goes through its
        C{listenTCP} (or, without the TLS workaround, its C{listenSSL}).
    @raise ValueError: (or another exception from Twisted's parser) if the
        description is not one Twisted knows.
    """
    proxied = description.startswith(HAPROXY)
    inner = description[len(HAPROXY) :] if proxied else description
    if inner.startswith(SSL):
        tls_reactor = _tls_reactor()
        if tls_reactor is not None:
            reactor = tls_reactor(reactor)
    if proxied:
        proxy_endpoint = _proxy_endpoint()
        if proxy_endpoint is not None:
            return proxy_endpoint(endpoints.serverFromString(reactor, inner))
    endpoint: IStreamServerEndpoint = endpoints.serverFromString(reactor, description)
    return endpoint


@functools.cache
def _tls_reactor() -> Callable[[Any], Any] | None:
    """
    L{tsecho._tls.HalfCloseTLSReactor}, or C{None} (after one warning) if
    this Twisted does not have what it relies on.
    """
    return cast("Callable[[Any], Any] | None", _workaround(SSL, "tsecho._tls", "HalfCloseTLSReactor"))


@functools.cache
def _proxy_endpoint() -> Callable[[IStreamServerEndpoint], IStreamServerEndpoint] | None:
    """
    L{tsecho._proxy.ProxyServerEndpoint}, or C{None} (after one warning) if
    this Twisted does not have what it relies on.
    """
    endpoint = _workaround(HAPROXY, "tsecho._proxy", "ProxyServerEndpoint")
    return cast("Callable[[IStreamServerEndpoint], IStreamServerEndpoint] | None", endpoint)


def _workaround(prefix: str, module_name: str, name: str) -> object:
    """
    Import C{module_name}, the workaround for C{prefix} listeners, and
    return its C{name}, unless the module's C{missing_internals()} finds
    something it relies on missing (or the import, or the check, fails):
    then log why and what is lost, and return C{None}.
    """
    try:
        module = importlib.import_module(module_name)
        why = module.missing_internals()
    except Exception as e:  # gone (ImportError), or changed beyond what the check foresaw
        why = f"{type(e).__name__}: {e}"
    if why is None:
        return getattr(module, name)
    log.warn(
        "Twisted {twisted_version} lacks what tsecho's {prefix} listeners rely on ({why}): "
        "they are Twisted's own, without {lost}",
        twisted_version=twisted.__version__,
        prefix=prefix,
        why=why,
        lost=_LOST[prefix],
    )
    return None
