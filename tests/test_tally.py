"""
Tests for L{tsecho._tally}: how a connection ended reads as its words.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tsecho._tally import Ending


class EndingTests(SynchronousTestCase):
    """
    An L{Ending} is its words wherever it is shown: C{str}, a format field
    of a log line, a metrics label.
    """

    def test_words(self) -> None:
        """
        C{str} and formatting give the value (not C{Ending.IDLE_TIMEOUT}),
        whatever the Python version's rules for C{str}-mixed enums.
        """
        for ending in Ending:
            self.assertEqual(str(ending), ending.value)
            self.assertEqual(f"{ending}", ending.value)
            self.assertEqual(f"closed ({ending})", f"closed ({ending.value})")
        self.assertEqual(str(Ending.IDLE_TIMEOUT), "idle timeout")
