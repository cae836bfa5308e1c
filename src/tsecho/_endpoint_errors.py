"""
Why an endpoint description (C{--listen}, C{--connect}) was refused, in words.

Twisted's parsers fail with whatever the endpoint's constructor raised, such
as C{TCP4ClientEndpoint.__init__() missing 1 required positional argument:
'port'}, C{Unknown endpoint type: 'bogus'} for a misspelt type, or C{list
index out of range} for a C{systemd:} listener that was passed no socket;
these say which part of the description to fix.
"""

from __future__ import annotations

import re

_NOT_A_NUMBER = re.compile(r"invalid literal for int\(\) with base 10: '(?P<value>.*)'")
_UNKNOWN_TYPE = re.compile(r"Unknown endpoint type: '(?P<name>.*)'")
_MISSING = re.compile(r"missing \d+ required (?:positional |keyword-only )?arguments?: (?P<names>.*)")


def explain_description_error(description: str, error: Exception) -> str:
    """
    One line saying what is wrong with C{description}.

    @param error: what Twisted's parser raised for it.
    """
    missing = _MISSING.search(str(error)) if isinstance(error, TypeError) else None
    if missing is not None:
        names = re.findall(r"'(\w+)'", missing["names"])
        return f"no {' or '.join(names)} given: add {':'.join(f'{name}=...' for name in names)}"
    not_a_number = _NOT_A_NUMBER.search(str(error)) if isinstance(error, ValueError) else None
    if not_a_number is not None:
        return f"{not_a_number['value']} is not a number"
    unknown = _UNKNOWN_TYPE.fullmatch(str(error)) if isinstance(error, ValueError) else None
    if unknown is not None:
        return f"{unknown['name']} is not an endpoint type Twisted knows: start with one such as tcp: or unix:"
    if description.startswith("systemd:") and isinstance(error, (IndexError, KeyError)):
        which = f"named {error.args[0]}" if isinstance(error, KeyError) else "at that index"
        return (
            f"no socket {which} was passed by systemd: start tsecho from its .socket unit "
            "(see contrib/systemd), or set LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES"
        )
    return " ".join((str(error) or type(error).__name__).split())
