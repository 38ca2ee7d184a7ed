"""The Reason header field (RFC 3326): why a BYE or CANCEL was sent.

A PBX or B2BUA says why it ends a call — ``Reason: Q.850;cause=16;text="Normal call clearing"``
(the ISDN cause of the far leg, RFC 3326 §2 and ITU-T Q.850) — and a forking proxy CANCELs the
branches that lost with ``Reason: SIP;cause=200;text="Call completed elsewhere"`` (RFC 3326
§1): the phone that rang was not missed, the call was answered on another device.

Grammar (RFC 3326 §2)::

    Reason            =  "Reason" HCOLON reason-value *(COMMA reason-value)
    reason-value      =  protocol *(SEMI reason-params)
    protocol          =  "SIP" / "Q.850" / token
    reason-params     =  protocol-cause / reason-text / reason-extension
    protocol-cause    =  "cause" EQUAL cause
    cause             =  1*DIGIT
    reason-text       =  "text" EQUAL quoted-string

Sans-IO: text in, values out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from skinnysip.sip.syntax import (
    TOKEN_RE,
    SIPParseError,
    parse_params,
    quote_string,
    split_comma,
    uint_or_none,
    unquote_string,
)

__all__ = ["COMPLETED_ELSEWHERE", "MAX_REASONS", "Reason", "completed_elsewhere", "describe", "parse_reasons"]

#: reason-values read from one message at most (one per protocol is the norm, RFC 3326 §2)
MAX_REASONS = 8
_MAX_TEXT = 200


@dataclass(frozen=True)
class Reason:
    """One reason-value: ``protocol`` (``SIP``, ``Q.850`` or another token, as written),
    ``cause`` (a SIP status code for ``SIP``, an ISDN cause value for ``Q.850``; None when
    absent or not a number) and ``text`` (the unquoted reason-text, at most 200 characters;
    None when absent)."""

    protocol: str
    cause: int | None = None
    text: str | None = None

    def __str__(self) -> str:
        """Human form: ``Q.850 cause 16 (Normal call clearing)``."""
        words = self.protocol + (f" cause {self.cause}" if self.cause is not None else "")
        return f"{words} ({self.text})" if self.text else words

    def header_value(self) -> str:
        """The reason-value as sent: ``SIP;cause=200;text="Call completed elsewhere"``."""
        value = self.protocol + (f";cause={self.cause}" if self.cause is not None else "")
        if self.text is not None:
            value += f";text={quote_string(self.text)}"
        return value


#: what a forking proxy puts in the CANCELs of the branches that lost (RFC 3326 §1)
COMPLETED_ELSEWHERE = Reason("SIP", 200, "Call completed elsewhere")


def parse_reasons(values: Iterable[str]) -> list[Reason]:
    """The reason-values of a message's Reason field lines (``headers.get_all("Reason")``),
    in order; a malformed one (no protocol token, bad parameters, an unterminated quote) is
    skipped, not an error — a reason is information, never a reason to refuse a BYE. At most
    :data:`MAX_REASONS`."""
    reasons: list[Reason] = []
    for line in values:
        try:
            items = split_comma(line)
        except SIPParseError:
            continue
        for item in items:
            protocol, semi, rest = item.partition(";")
            protocol = protocol.strip()
            if not TOKEN_RE.fullmatch(protocol):
                continue
            try:
                params = parse_params(semi + rest) if semi else {}
            except SIPParseError:
                continue
            text = params.get("text")
            reasons.append(Reason(protocol, uint_or_none(params.get("cause"), 2**31 - 1),
                                  unquote_string(text)[:_MAX_TEXT] if text is not None else None))
            if len(reasons) >= MAX_REASONS:
                return reasons
    return reasons


def completed_elsewhere(reasons: Iterable[Reason]) -> bool:
    """True when a CANCEL's reasons say the call was answered on another branch: protocol
    ``SIP`` with cause 200 (RFC 3326 §1; the text is informative only)."""
    return any(r.protocol.upper() == "SIP" and r.cause == 200 for r in reasons)


def describe(reasons: Iterable[Reason]) -> str | None:
    """The reasons in human form, ``; ``-separated (``Q.850 cause 16 (Normal call clearing)``);
    None when there are none."""
    return "; ".join(map(str, reasons)) or None
