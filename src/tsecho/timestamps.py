"""
Timestamps for replies: the C{[TIMESTAMP] } prefix, built once per second.

Every transport (stream and datagram) formats its replies through
L{Timestamper}, so there is one implementation of the reply prefix.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone

import attrs

CTIME = "ctime"
ISO = "iso"


def validate_time_format(time_format: str) -> str:
    """
    Check a C{--time-format} value and return it unchanged.

    @raise ValueError: if it is neither C{ctime}, C{iso}, nor a strftime
        pattern (a pattern must contain at least one C{%} directive).
    """
    if time_format in (CTIME, ISO):
        return time_format
    if "%" not in time_format:
        raise ValueError(
            f"time format {time_format!r} is not 'ctime', 'iso' or a strftime "
            "pattern (a pattern needs at least one % directive)"
        )
    try:
        time.strftime(time_format, time.gmtime(0))
    except ValueError as e:
        raise ValueError(f"bad strftime pattern {time_format!r}: {e}") from None
    unknown = [d for d in dict.fromkeys(_DIRECTIVE.findall(time_format)) if _unknown_directive(d)]
    if unknown:
        raise ValueError(
            f"time format {time_format!r} has directives strftime does not know: {', '.join(unknown)} "
            "(write %% for a literal %)"
        )
    if "\n" in format_timestamp(0, time_format, utc=True):
        raise ValueError(f"time format {time_format!r} makes a line break, which would end the reply line")
    return time_format


#: A strftime directive: C{%}, glibc's optional flags and modifier, one letter.
_DIRECTIVE = re.compile(r"%[-_0^#]*[EO]?(?:.|$)", re.DOTALL)


def _unknown_directive(directive: str) -> bool:
    """
    Whether the platform's strftime leaves C{directive} as it is (what glibc
    does with a directive it does not know, such as C{%Q}).
    """
    return directive != "%%" and time.strftime(directive, time.gmtime(0)) == directive


def format_timestamp(seconds: float, time_format: str = CTIME, utc: bool = False) -> str:
    """
    Format the POSIX time C{seconds} for a reply.

    @param time_format: C{ctime} (C{Thu Nov 26 14:09:48 2026}, the default and
        the original server's format), C{iso} (RFC 3339 with a numeric offset,
        C{2026-11-26T14:09:48+00:00}), or a strftime pattern.
    @param utc: use UTC instead of the local time zone.
    """
    whole = int(seconds)
    if time_format == ISO:
        zone = timezone.utc if utc else None
        return datetime.fromtimestamp(whole, zone).astimezone(zone).isoformat()
    moment = time.gmtime(whole) if utc else time.localtime(whole)
    if time_format == CTIME:
        return time.asctime(moment)
    return time.strftime(time_format, moment)


@attrs.define
class Timestamper:
    """
    Produce the reply prefix C{b"[TIMESTAMP] "} for a moment in time.

    Formatting a time costs far more than echoing a line, so the prefix is
    cached for the current whole second: a busy server formats once per
    second, not once per line.
    """

    time_format: str = attrs.field(default=CTIME, validator=lambda _i, _a, v: validate_time_format(v))
    utc: bool = False
    _second: int = attrs.field(default=-1, init=False, repr=False)
    _prefix: bytes = attrs.field(default=b"", init=False, repr=False)

    def prefix(self, seconds: float) -> bytes:
        """
        Return C{b"[TIMESTAMP] "} for the POSIX time C{seconds}.
        """
        whole = int(seconds)
        if whole != self._second:
            stamp = format_timestamp(whole, self.time_format, self.utc)
            self._prefix = b"[" + stamp.encode("utf-8", "replace") + b"] "
            self._second = whole
        return self._prefix

    def reply(self, seconds: float, payload: bytes) -> bytes:
        """
        Return the whole reply to C{payload}: prefix, then the payload byte for byte.
        """
        return self.prefix(seconds) + payload
