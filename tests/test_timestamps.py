"""
Tests for L{tsecho.timestamps}: the formats, the per-second cache, validation.
"""

from __future__ import annotations

import calendar
import time

from twisted.trial.unittest import SynchronousTestCase

from timezones import use_time_zone
from tsecho import timestamps
from tsecho.testing import EXAMPLE_STAMP, EXAMPLE_TIME
from tsecho.timestamps import Timestamper, format_timestamp, validate_time_format


class FormatTests(SynchronousTestCase):
    """
    L{format_timestamp} in each format, in UTC and local time.
    """

    def test_ctime_utc(self) -> None:
        """
        C{ctime} is the default format: C{Thu Nov 26 14:09:48 2026}.
        """
        self.assertEqual(format_timestamp(EXAMPLE_TIME, utc=True), "Thu Nov 26 14:09:48 2026")
        self.assertEqual(format_timestamp(EXAMPLE_TIME, "ctime", True), "Thu Nov 26 14:09:48 2026")

    def test_ctime_space_padded_day(self) -> None:
        """
        A one-digit day of month is padded with a space, not a zero.
        """
        moment = calendar.timegm((2026, 11, 6, 4, 5, 6))
        self.assertEqual(format_timestamp(moment, utc=True), "Fri Nov  6 04:05:06 2026")

    def test_ctime_local(self) -> None:
        """
        Without C{utc}, C{ctime} is local time, like C{time.ctime()}.
        """
        use_time_zone(self, "EST5")
        self.assertEqual(format_timestamp(EXAMPLE_TIME), "Thu Nov 26 09:09:48 2026")
        self.assertEqual(format_timestamp(EXAMPLE_TIME), time.ctime(EXAMPLE_TIME))

    def test_iso_utc(self) -> None:
        """
        C{iso} in UTC is RFC 3339 with a C{+00:00} offset, whole seconds.
        """
        self.assertEqual(format_timestamp(EXAMPLE_TIME + 0.75, "iso", True), "2026-11-26T14:09:48+00:00")

    def test_iso_local(self) -> None:
        """
        C{iso} in local time carries the zone's offset, also across a DST change.
        """
        use_time_zone(self, "CET-1CEST,M3.5.0,M10.5.0/3")
        self.assertEqual(format_timestamp(EXAMPLE_TIME, "iso"), "2026-11-26T15:09:48+01:00")
        summer = calendar.timegm((2026, 7, 1, 12, 0, 0))
        self.assertEqual(format_timestamp(summer, "iso"), "2026-07-01T14:00:00+02:00")

    def test_strftime(self) -> None:
        """
        Any other format is a strftime pattern.
        """
        self.assertEqual(format_timestamp(EXAMPLE_TIME, "%H:%M:%S on %d.%m.%Y", True), "14:09:48 on 26.11.2026")

    def test_strftime_local(self) -> None:
        """
        A strftime pattern formats local time without C{utc}.
        """
        use_time_zone(self, "EST5")
        self.assertEqual(format_timestamp(EXAMPLE_TIME, "%H:%M %Z"), "09:09 EST")

    def test_utc_outside_utc(self) -> None:
        """
        C{utc} gives UTC in every format even where local time is not UTC
        (the tests would pass unchanged on a UTC machine otherwise).
        """
        use_time_zone(self, "EST5")
        self.assertEqual(format_timestamp(EXAMPLE_TIME, utc=True), "Thu Nov 26 14:09:48 2026")
        self.assertEqual(format_timestamp(EXAMPLE_TIME, "iso", True), "2026-11-26T14:09:48+00:00")
        self.assertEqual(format_timestamp(EXAMPLE_TIME, "%H:%M", True), "14:09")

    def test_fraction_dropped(self) -> None:
        """
        Fractions of a second are dropped, not rounded.
        """
        self.assertEqual(format_timestamp(EXAMPLE_TIME + 0.999, utc=True), "Thu Nov 26 14:09:48 2026")


class TimestamperTests(SynchronousTestCase):
    """
    L{Timestamper} builds the C{b"[TIMESTAMP] "} prefix, once per second.
    """

    def test_prefix(self) -> None:
        """
        The prefix is the timestamp in brackets and a space.
        """
        self.assertEqual(Timestamper(utc=True).prefix(EXAMPLE_TIME), EXAMPLE_STAMP)
        self.assertEqual(Timestamper("iso", utc=True).prefix(EXAMPLE_TIME), b"[2026-11-26T14:09:48+00:00] ")

    def test_reply(self) -> None:
        """
        A reply is the prefix and the payload byte for byte.
        """
        stamper = Timestamper(utc=True)
        self.assertEqual(stamper.reply(EXAMPLE_TIME, b"\xff\x00\n"), EXAMPLE_STAMP + b"\xff\x00\n")
        self.assertEqual(stamper.reply(EXAMPLE_TIME, b""), EXAMPLE_STAMP)

    def test_non_ascii_pattern(self) -> None:
        """
        A pattern with non-ASCII text gives a UTF-8 prefix.
        """
        self.assertEqual(Timestamper("%Y \N{EURO SIGN}", utc=True).prefix(EXAMPLE_TIME), b"[2026 \xe2\x82\xac] ")

    def test_utc_prefix_outside_utc(self) -> None:
        """
        A L{Timestamper} with C{utc} formats in UTC, and one without in local
        time, whatever the machine's zone.
        """
        use_time_zone(self, "EST5")
        self.assertEqual(Timestamper(utc=True).prefix(EXAMPLE_TIME), EXAMPLE_STAMP)
        self.assertEqual(Timestamper().prefix(EXAMPLE_TIME), b"[Thu Nov 26 09:09:48 2026] ")

    def test_undecodable_byte_in_pattern(self) -> None:
        """
        A byte that is not UTF-8 in a pattern given on the command line
        (which Python decodes to a lone surrogate, and CPython's strftime
        passes through) becomes C{?} in the prefix instead of failing every
        reply.
        """
        self.patch(timestamps, "format_timestamp", lambda *_, **__: b"2026 \xff".decode("utf-8", "surrogateescape"))
        self.assertEqual(Timestamper("%Y", utc=True).prefix(EXAMPLE_TIME), b"[2026 ?] ")

    def test_cached_per_second(self) -> None:
        """
        The timestamp is formatted once per second: times within the same
        second reuse it; the next second gets a new one.
        """
        calls: list[float] = []
        original = timestamps.format_timestamp

        def counting(seconds: float, time_format: str = "ctime", utc: bool = False) -> str:
            calls.append(seconds)
            return original(seconds, time_format, utc)

        self.patch(timestamps, "format_timestamp", counting)
        stamper = Timestamper(utc=True)
        first = stamper.prefix(EXAMPLE_TIME)
        for fraction in (0.0, 0.25, 0.5, 0.999):
            self.assertIs(stamper.prefix(EXAMPLE_TIME + fraction), first)
        self.assertEqual(len(calls), 1)
        self.assertEqual(stamper.prefix(EXAMPLE_TIME + 1), b"[Thu Nov 26 14:09:49 2026] ")
        self.assertEqual(stamper.prefix(EXAMPLE_TIME + 1.5), b"[Thu Nov 26 14:09:49 2026] ")
        self.assertEqual(len(calls), 2)
        self.assertEqual(stamper.prefix(EXAMPLE_TIME), first)
        self.assertEqual(len(calls), 3)

    def test_epoch(self) -> None:
        """
        The cache has no false hit at time 0 (its initial second is not a real one).
        """
        self.assertEqual(Timestamper(utc=True).prefix(0), b"[Thu Jan  1 00:00:00 1970] ")

    def test_invalid_format_refused(self) -> None:
        """
        A L{Timestamper} cannot be built with a bad format.
        """
        self.assertRaises(ValueError, Timestamper, "xx")


class ValidateTests(SynchronousTestCase):
    """
    L{validate_time_format} accepts C{ctime}, C{iso}, and strftime patterns.
    """

    def test_named(self) -> None:
        """
        C{ctime} and C{iso} are accepted and returned unchanged.
        """
        self.assertEqual(validate_time_format("ctime"), "ctime")
        self.assertEqual(validate_time_format("iso"), "iso")

    def test_pattern(self) -> None:
        """
        A pattern with a C{%} directive is accepted unchanged.
        """
        self.assertEqual(validate_time_format("%s"), "%s")
        self.assertEqual(validate_time_format("at %H:%M"), "at %H:%M")

    def test_no_directive(self) -> None:
        """
        Text with no C{%} that is not a format name is refused, with a message
        that says what is expected.
        """
        for bad in ("xx", "", "ISO", "Ctime", "yyyy-mm-dd"):
            e = self.assertRaises(ValueError, validate_time_format, bad)
            self.assertEqual(
                str(e),
                f"time format {bad!r} is not 'ctime', 'iso' or a strftime pattern"
                " (a pattern needs at least one % directive)",
            )

    def test_bad_pattern(self) -> None:
        """
        A pattern strftime cannot use is refused.
        """
        e = self.assertRaises(ValueError, validate_time_format, "%Y\0")
        prefix = "bad strftime pattern '%Y\\x00': "  # then Python's reason, which varies between Pythons
        self.assertEqual(str(e)[: len(prefix)], prefix)
        self.assertGreater(len(str(e)), len(prefix))

    def test_unknown_directives(self) -> None:
        """
        Directives strftime does not know (it would print them as they are)
        are refused, each named once; C{%%} is a literal C{%}.
        """
        e = self.assertRaises(ValueError, validate_time_format, "%H:%M:%S %Q %Q %")
        self.assertEqual(
            str(e),
            "time format '%H:%M:%S %Q %Q %' has directives strftime does not know: %Q, % (write %% for a literal %)",
        )
        self.assertEqual(validate_time_format("100%% at %-H:%_M"), "100%% at %-H:%_M")

    def test_line_break_refused(self) -> None:
        """
        A pattern that makes a line break (C{%n}) would split every reply.
        """
        e = self.assertRaises(ValueError, validate_time_format, "%H%n")
        self.assertIn("line break", str(e))
