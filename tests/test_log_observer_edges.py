"""
L{tsecho.logs} observers at their edges: a JSON field that JSON cannot
hold as it is, and the C{--logger} entry points.
"""

from __future__ import annotations

import io
import json
import sys

from twisted.logger import LogLevel
from twisted.trial.unittest import SynchronousTestCase

from test_logs import FakeReactor
from tsecho.logs import BatchedWriter, JSONObserver, TextObserver, json_observer, text_observer


class JSONFallbackTests(SynchronousTestCase):
    """
    A field JSON cannot encode as it is (a dict whose keys are not
    strings) is written as its text; the other fields stay as they are.
    """

    def test_unencodable_field(self) -> None:
        """
        The record is still one JSON line, the odd field as its C{str}.
        """
        out = io.StringIO()
        JSONObserver(BatchedWriter(out, FakeReactor(running=False)))(
            {
                "log_format": "odd",
                "log_level": LogLevel.warn,
                "log_namespace": "tsecho.test",
                "log_time": 0.0,
                "odd": {(1, 2): "tuple key"},
                "count": 3,
            }
        )
        record = json.loads(out.getvalue())
        self.assertEqual(record["odd"], str({(1, 2): "tuple key"}))
        self.assertEqual((record["count"], record["message"], record["level"]), ("3", "odd", "warn"))


class EntryPointTests(SynchronousTestCase):
    """
    C{twistd --logger tsecho.logs.json_observer} and
    C{tsecho.logs.text_observer}: each an observer on standard output.
    """

    def test_observers(self) -> None:
        """
        Each makes its kind of observer.
        """
        self.patch(sys, "stdout", io.StringIO())
        self.assertIsInstance(json_observer(), JSONObserver)
        self.assertIsInstance(text_observer(), TextObserver)
