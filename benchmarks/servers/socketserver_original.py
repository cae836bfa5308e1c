"""
The original server of SPEC.md (Core Python Programming's C{tsTservSS.py}), as
written, run under Python 3: its reply is C{[ctime] b'LINE\\r\\n'} (a bytes
repr), one line per connection, one connection at a time.

Only the port comes from the command line, so the benchmark can choose it.
"""

import sys
from socketserver import StreamRequestHandler, TCPServer
from time import ctime


class MyRequestHandler(StreamRequestHandler):
    def handle(self):
        print("connected from:", self.client_address)
        self.wfile.write(("[%s] %s" % (ctime(), self.rfile.readline())).encode("utf-8"))  # noqa: UP031


TCPServer(("", int(sys.argv[1])), MyRequestHandler).serve_forever()
