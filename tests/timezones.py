"""
Set the process's local time zone for one test: global state, so it lives
here beside the tests and not in the public L{tsecho.testing}.
"""

from __future__ import annotations

import os
import time

from twisted.trial.unittest import SynchronousTestCase


def use_time_zone(case: SynchronousTestCase, zone: str) -> None:
    """
    Make C{zone} (a C{TZ} value such as C{"EST5EDT"}) the local time zone
    for the rest of C{case}, so local-time replies are the same everywhere.
    """
    old = os.environ.get("TZ")

    def restore() -> None:
        if old is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old
        time.tzset()

    os.environ["TZ"] = zone
    time.tzset()
    case.addCleanup(restore)
