"""
The C{twistd tsecho} command.  Kept tiny: it imports nothing from tsecho, so
listing plugins stays cheap and an import error cannot hide the command.
"""

from twisted.application.service import ServiceMaker

tsecho = ServiceMaker(
    "tsecho",
    "tsecho.tap",
    "A timestamp echo server: each line comes back as '[TIMESTAMP] LINE'.",
    "tsecho",
)
