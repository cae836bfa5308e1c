"""
Baseline: the naive Twisted port, a C{LineReceiver} calling C{sendLine} per line.
"""

import sys
import time

from twisted.internet import protocol, reactor
from twisted.protocols.basic import LineReceiver


class Echo(LineReceiver):
    delimiter = b"\n"

    def lineReceived(self, line: bytes) -> None:
        self.sendLine(b"[" + time.ctime().encode() + b"] " + line)


factory = protocol.ServerFactory.forProtocol(Echo)
reactor.listenTCP(int(sys.argv[1]), factory, interface="127.0.0.1")
reactor.run()
