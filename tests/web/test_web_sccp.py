"""The SCCP tester of the web page in headless Chromium against the lab call manager.

Register (registered, RegisterAck on the ladder) and an echo call (call states, RTP counts both
ways, ladder with the media addresses), the pcapng of the call read by tshark's SKINNY dissector
(the lab CM listens on a free port, so tshark is told ``-d tcp.port==PORT,skinny``); a bad device
name refused next to its field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from webtools import assert_clean_capture, field, ladder_labels, run_form, tshark_rows

from skinnysip.lab.callmanager import LabCallManager

pytestmark = pytest.mark.peer

ALICE = "SEP001122334455"


def open_sccp(page: Any, server: str) -> None:
    page.goto(f"{server}/#sccp")
    page.locator("#sccp-form").wait_for()


def test_register_against_the_lab_call_manager(page: Any, server: str, lab_cm: LabCallManager,
                                               artifacts: Path) -> None:
    open_sccp(page, server)
    res = run_form(page, "sccp", {"host": "127.0.0.1", "port": str(lab_cm.port), "device-name": ALICE},
                   selects={"operation": "register", "device-type": "7"})
    assert res["success"] is True, res["error"]
    assert field(page, "sccp", "registered") == "true"
    assert field(page, "sccp", "deviceTypeName") == "7960"
    labels = ladder_labels(page, "sccp")
    assert labels[:2] == ["Register (tcp)", "RegisterAck (tcp)"]
    # the probe ends by unregistering: Unregister, then the CM's UnregisterAck (the CM's own
    # late messages, e.g. SelectSoftKeys, may arrive around them)
    assert "Unregister (tcp)" in labels and "UnregisterAck (tcp)" in labels
    assert labels.index("Unregister (tcp)") < labels.index("UnregisterAck (tcp)")
    details = page.locator("#sccp-result svg.ladder-svg text.detail").all_text_contents()
    assert f"{ALICE} type 7" in details
    page.click('#sccp-result svg.ladder-svg g.msg[data-index="0"]')
    assert page.locator("#sccp-result .message-detail pre.raw").text_content() == res["exchange"][0]["raw"]
    assert ALICE in (page.locator("#sccp-result .message-detail pre.decoded").text_content() or "")
    page.screenshot(path=str(artifacts / "sccp-register.png"), full_page=True)


def test_echo_call_states_rtp_and_pcap(page: Any, server: str, lab_cm: LabCallManager, artifacts: Path) -> None:
    open_sccp(page, server)
    page.select_option("#sccp-operation", "call-setup")
    res = run_form(page, "sccp", {"host": "127.0.0.1", "port": str(lab_cm.port), "dial-number": "600",
                                  "hold-ms": "1500", "timeout": "8000"})
    assert res["success"] is True, res["error"]
    call = res["call"]
    states = page.locator("#sccp-result ol.states li").all_text_contents()
    assert states == call["states"]
    assert states[0] == "OffHook" and "Connected" in states and states[-1] == "OnHook"
    sent = int((page.locator('#sccp-result p.rtp [data-key="rtpPacketsSent"]').first.text_content() or "").split()[-1])
    received = int((page.locator('#sccp-result p.rtp [data-key="rtpPacketsReceived"]').first.text_content() or "").split()[-1])
    assert sent == call["rtpPacketsSent"] and received == call["rtpPacketsReceived"]
    assert sent >= 25 and received >= 20  # 1.5 s of 20 ms packets, echoed back
    details = page.locator("#sccp-result svg.ladder-svg text.detail").all_text_contents()
    assert "Connected" in details and "1001 → 600" in details
    assert any(d.startswith("RTP out → 127.0.0.1:") for d in details)
    assert any(d.startswith("RTP in 127.0.0.1:") for d in details)
    page.screenshot(path=str(artifacts / "sccp-echo-call.png"), full_page=True)

    with page.expect_download() as info:
        page.click("#sccp-result button.download-pcap")
    pcap = artifacts / "sccp-echo-call.pcapng"
    info.value.save_as(pcap)
    decode = [f"tcp.port=={lab_cm.port},skinny"]
    rows = tshark_rows(pcap, "skinny.messageId", decode_as=decode, display_filter="skinny")
    ids = [int(mid, 16) if mid.startswith("0x") else int(mid) for r in rows for mid in r[0].split(",")]
    assert ids == [m["decoded"]["id"] for m in res["exchange"]]
    assert_clean_capture(pcap, decode_as=decode)


def test_bad_device_name_is_refused_next_to_the_field(page: Any, server: str, lab_cm: LabCallManager) -> None:
    open_sccp(page, server)
    page.fill("#sccp-host", "127.0.0.1")
    page.fill("#sccp-port", str(lab_cm.port))
    page.fill("#sccp-device-name", "SEP0011")
    # the pattern flags it while typing; the API's answer is placed under the field
    assert page.get_attribute("#sccp-device-name", "aria-invalid") == "true"
    page.click("#sccp-run")
    error = page.locator("#sccp-device-name-error")
    error.wait_for()
    assert "SEP + 12 hex digits" in (error.text_content() or "")
    assert page.locator("#sccp-result").is_hidden()
    # call-setup without a number: the API names dialNumber
    page.fill("#sccp-device-name", ALICE)
    page.select_option("#sccp-operation", "call-setup")
    page.click("#sccp-run")
    page.locator("#sccp-dial-number-error").wait_for()
    assert page.locator("#sccp-device-name-error").count() == 0
