"""Module-level regular expressions compiled when first used, not when their module loads.

A command pays for the patterns it runs, not for every pattern of every module it imports:
``skinnysip sip options`` loads ~37 of the SIP core's and the CLI's patterns and uses ten of
them to send an OPTIONS and read its 200 (issue 12's start-up budget; ``re.compile`` of the
rest is ~2 ms of a ~110 ms process).

After its first use a pattern costs what a compiled one does: its methods are then plain
attributes of the stand-in (bound methods of the compiled pattern), found without a call.
"""

from __future__ import annotations

import re
from typing import Any, overload

__all__ = ["compile_on_use"]

#: the attributes of a compiled pattern copied onto the stand-in at its first use
_ATTRIBUTES = ("match", "fullmatch", "search", "sub", "subn", "split", "findall", "finditer", "scanner",
               "flags", "groups", "groupindex")


class _PatternOnUse:
    """Stands in for ``re.compile(pattern, flags)`` until an attribute is asked for."""

    def __init__(self, pattern: str | bytes, flags: int) -> None:
        self._source = (pattern, flags)
        self.pattern = pattern  # at hand without compiling: patterns are built from others'

    def __getattr__(self, name: str) -> Any:
        # Only called for what the instance does not have: before the first use, or for an
        # attribute outside _ATTRIBUTES (then the pattern compiled the first time is reused).
        compiled = self.__dict__.get("_compiled")
        if compiled is None:
            compiled = self._compiled = re.compile(*self._source)  # type: ignore[type-var]
            for attribute in _ATTRIBUTES:
                setattr(self, attribute, getattr(compiled, attribute))
        return getattr(compiled, name)

    def __repr__(self) -> str:
        return f"compile_on_use({self._source[0]!r}, {self._source[1]!r})"


@overload
def compile_on_use(pattern: str, flags: int = 0) -> re.Pattern[str]: ...


@overload
def compile_on_use(pattern: bytes, flags: int = 0) -> re.Pattern[bytes]: ...


def compile_on_use(pattern: str | bytes, flags: int = 0) -> re.Pattern[str] | re.Pattern[bytes]:
    """A stand-in for ``re.compile(pattern, flags)`` that compiles on first use.

    It has the compiled pattern's methods and attributes (``match``, ``fullmatch``,
    ``search``, ``sub``, ``subn``, ``split``, ``findall``, ``finditer``, ``pattern``,
    ``flags``, ``groups``, ``groupindex``); it is not an ``re.Pattern`` instance, so it is
    not passed where one is required (``re.sub(p, …)``, ``isinstance``). A bad pattern raises
    ``re.error`` at its first use, so every pattern made with it is exercised by a test.
    """
    return _PatternOnUse(pattern, flags)  # type: ignore[return-value]
