"""RFC 3842 message summaries (``application/simple-message-summary``), as voicemail servers
write them."""

from __future__ import annotations

import pytest

from skinnysip.sip.mwi import (
    MAX_SUMMARY_BYTES,
    MessageSummary,
    MessageSummaryError,
    format_message_summary,
    parse_message_summary,
)


def test_the_rfc_3842_example() -> None:
    body = b"Messages-Waiting: yes\r\nMessage-Account: sip:alice@vmail.example.com\r\nVoice-Message: 2/8 (0/2)\r\n"
    assert parse_message_summary(body) == MessageSummary(True, "sip:alice@vmail.example.com",
                                                         (("voice-message", (2, 8, 0, 2)),))


def test_asterisk_style_lf_lines_any_case_and_no_urgent_counts() -> None:
    body = b"messages-waiting: no\nmessage-account: sip:*97@pbx\nvoice-message: 0/3\nFax-Message: 1/0 (1/0)\n"
    summary = parse_message_summary(body)
    assert not summary.waiting and summary.account == "sip:*97@pbx"
    assert summary.counts == (("voice-message", (0, 3, 0, 0)), ("fax-message", (1, 0, 1, 0)))


def test_lines_it_does_not_know_are_skipped() -> None:
    body = (b"Messages-Waiting: yes\r\nVoice-Message: lots\r\nVideo-Message: 1/1\r\n"
            b"Voice-Message: 1234567890/1\r\n\r\nTo: <sip:alice@example.com>\r\nX-Extension: 1\r\n")
    assert parse_message_summary(body) == MessageSummary(True, None, ())


@pytest.mark.parametrize("body", [b"", b"Voice-Message: 1/0\r\n", b"Messages-Waiting: maybe\r\n",
                                  b"\xff\xfe\x00\x01", b"Messages-Waiting: yes\r\n" + b"x" * MAX_SUMMARY_BYTES])
def test_what_is_not_a_summary_is_refused(body: bytes) -> None:
    with pytest.raises(MessageSummaryError):
        parse_message_summary(body)


def test_a_summary_formats_and_reads_back() -> None:
    """RFC 3842 §5.2: the Messages-Waiting line, Message-Account, one line per class (urgent
    counts only when not 0), CRLF; what we write parses back to the same summary."""
    summary = MessageSummary(True, "sip:1001@lab.skinnysip", (("voice-message", (2, 8, 0, 2)),
                                                               ("fax-message", (1, 0, 0, 0))))
    body = format_message_summary(summary)
    assert body == (b"Messages-Waiting: yes\r\nMessage-Account: sip:1001@lab.skinnysip\r\n"
                    b"Voice-Message: 2/8 (0/2)\r\nFax-Message: 1/0\r\n")
    assert parse_message_summary(body) == summary
    assert format_message_summary(MessageSummary(False, None, ())) == b"Messages-Waiting: no\r\n"
    with pytest.raises(ValueError):
        format_message_summary(MessageSummary(True, None, (("spam-message", (1, 0, 0, 0)),)))
    with pytest.raises(ValueError):
        format_message_summary(MessageSummary(True, None, (("voice-message", (-1, 0, 0, 0)),)))
