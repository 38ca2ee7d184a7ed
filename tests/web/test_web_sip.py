"""The SIP/SIPS tester of the web page in headless Chromium against a real Kamailio.

OPTIONS (UDP) and digest-auth (TCP, right and wrong password) and OPTIONS over TLS: the
result fields, the header table, the raw response and the ladder show the real exchange; a
message clicked on the ladder shows its raw text; the ladder exports as SVG and text; the
pcapng download opens in tshark with the same messages, addresses and ports and nothing
malformed. API errors land next to the field they name. The page never leaves 127.0.0.1.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from sip_peers import KamailioPeer
from webtools import assert_clean_capture, field, ladder_labels, run_form, tshark_rows

pytestmark = pytest.mark.peer


def save_download(page: Any, selector: str, path: Path) -> Path:
    with page.expect_download() as info:
        page.click(selector)
    info.value.save_as(path)
    return path


def split(endpoint: str) -> tuple[str, str]:
    host, _, port = endpoint.rpartition(":")
    return host.strip("[]"), port


def test_options_over_udp_shows_the_real_exchange(page: Any, server: str, kamailio_md5: KamailioPeer,
                                                  artifacts: Path) -> None:
    k = kamailio_md5
    page.goto(f"{server}/")
    res = run_form(page, "sip", {"host": "127.0.0.1", "port": str(k.udp_port)},
                   selects={"operation": "options", "transport": "udp"})
    assert res["success"] is True, res["error"]
    assert res["statusCode"] == 200
    assert field(page, "sip", "statusCode") == "200"
    assert field(page, "sip", "success") == "true"
    assert "OPTIONS" in field(page, "sip", "allowedMethods")

    # the header table is the final response's header fields, Kamailio's Server among them
    rows = page.locator("#sip-result table.headers tbody tr")
    shown = [(r.locator("td").nth(0).text_content(), r.locator("td").nth(1).text_content())
             for r in rows.all()]
    assert shown == [(h["name"], h["value"]) for h in res["headers"]]
    assert ("Server", k.server_header) in shown
    raw = page.locator("#sip-result section.block pre.raw").first.text_content() or ""
    assert raw.startswith("SIP/2.0 200 OK") and res["callId"] in raw

    # the ladder: one column per address:port, OPTIONS then 200 OK
    columns = page.locator("#sip-result svg.ladder-svg text.column").all_text_contents()
    local = res["exchange"][0]["local"]
    assert columns == [local, f"127.0.0.1:{k.udp_port}"]
    assert ladder_labels(page, "sip") == [f"{m['summary']} (udp)" for m in res["exchange"]]
    assert ladder_labels(page, "sip")[0].startswith("OPTIONS sip:")
    assert ladder_labels(page, "sip")[-1] == "200 OK (udp)"
    page.click('#sip-result svg.ladder-svg g.msg[data-index="1"]')
    shown_raw = page.locator("#sip-result .message-detail pre.raw").text_content() or ""
    assert shown_raw.replace("\r", "") == res["exchange"][1]["raw"].replace("\r", "")
    page.screenshot(path=str(artifacts / "sip-options.png"), full_page=True)

    # exports: SVG (well-formed, same labels) and text
    svg_path = save_download(page, "#sip-result button.export-svg", artifacts / "sip-options-ladder.svg")
    tree = ET.parse(svg_path)
    texts = ["".join(t.itertext()) for t in tree.iter("{http://www.w3.org/2000/svg}text")]
    assert any(t.startswith("OPTIONS sip:") for t in texts) and "200 OK (udp)" in texts
    txt = save_download(page, "#sip-result button.export-text", artifacts / "sip-options-ladder.txt").read_text()
    assert f"127.0.0.1:{k.udp_port}" in txt and "200 OK" in txt and len(txt.splitlines()) == 2 + len(res["exchange"])

    # pcapng: the same messages with the real addresses and ports
    pcap = save_download(page, "#sip-result button.download-pcap", artifacts / "sip-options.pcapng")
    rows2 = tshark_rows(pcap, "ip.src", "udp.srcport", "ip.dst", "udp.dstport", "sip.Method", "sip.Status-Code",
                        "sip.Call-ID")
    expected = []
    for m in res["exchange"]:
        src, dst = (m["local"], m["remote"]) if m["direction"] == "sent" else (m["remote"], m["local"])
        expected.append((*split(src), *split(dst)))
    assert [tuple(r[:4]) for r in rows2] == expected
    assert [r[4] for r in rows2] == ["OPTIONS", ""] and rows2[1][5] == "200"
    assert {r[6] for r in rows2} == {res["callId"]}
    assert_clean_capture(pcap)


def test_digest_auth_over_tcp_right_password(page: Any, server: str, kamailio_md5: KamailioPeer,
                                             artifacts: Path) -> None:
    k = kamailio_md5
    page.goto(f"{server}/#sip")
    page.select_option("#sip-operation", "digest-auth")
    res = run_form(page, "sip", {"host": "127.0.0.1", "port": str(k.tcp_port), "username": "alice",
                                 "password": k.users["alice"], "domain": k.realm},
                   selects={"transport": "tcp"})
    assert res["success"] is True, res["error"]
    assert field(page, "sip", "authenticated") == "true"
    assert field(page, "sip", "realm") == k.realm
    assert field(page, "sip", "challengeCode") == "401"
    summaries = [m["summary"] for m in res["exchange"]]
    assert [s.split(" ")[0] for s in summaries[:4]] == ["REGISTER", "401", "REGISTER", "200"]
    assert ladder_labels(page, "sip") == [f"{s} (tcp)" for s in summaries]
    page.screenshot(path=str(artifacts / "sip-digest-auth-ok.png"), full_page=True)

    # TCP in the pcap: tshark reassembles each message from our seq numbers, one SIP PDU each
    pcap = save_download(page, "#sip-result button.download-pcap", artifacts / "sip-digest-tcp.pcapng")
    rows = tshark_rows(pcap, "tcp.srcport", "tcp.dstport", "sip.CSeq", "sip.Status-Code", display_filter="sip")
    assert len(rows) == len(res["exchange"])
    cseqs = [r[2] for r in rows]
    assert cseqs[0].endswith("REGISTER") and rows[1][3] == "401" and rows[3][3] == "200"
    assert {(r[0], r[1]) for r in rows} == {(split(res["exchange"][0]["local"])[1], str(k.tcp_port)),
                                            (str(k.tcp_port), split(res["exchange"][0]["local"])[1])}
    assert_clean_capture(pcap)


def test_digest_auth_checks_reuse_and_replay_from_the_page(page: Any, server: str, kamailio_md5: KamailioPeer) -> None:
    """The "also try the nonce again and a replayed login" box: the result says what Kamailio
    (default auth module: a nonce is good until it expires) made of both — accepted."""
    k = kamailio_md5
    page.goto(f"{server}/#sip")
    page.select_option("#sip-operation", "digest-auth")
    res = run_form(page, "sip", {"host": "127.0.0.1", "port": str(k.udp_port), "username": "alice",
                                 "password": k.users["alice"], "domain": k.realm}, checks={"digest-checks": True})
    assert res["authenticated"] is True and res["unregistered"] is True, res["error"]
    assert field(page, "sip", "nonceReuse") == "accepted" and field(page, "sip", "replay") == "accepted"
    registers = [m for m in res["exchange"] if m["summary"].startswith("REGISTER")]
    assert len(registers) == 5  # login (2), reuse, replay, unregister


def test_digest_auth_wrong_password_is_not_authenticated(page: Any, server: str, kamailio_md5: KamailioPeer,
                                                         artifacts: Path) -> None:
    k = kamailio_md5
    page.goto(f"{server}/")
    page.select_option("#sip-operation", "digest-auth")
    res = run_form(page, "sip", {"host": "127.0.0.1", "port": str(k.udp_port), "username": "alice",
                                 "password": "not-" + k.users["alice"], "domain": k.realm})
    assert res["authenticated"] is False
    assert field(page, "sip", "authenticated") == "false"
    assert page.locator('#sip-result tr[data-key="authenticated"] td.no').count() == 1
    assert [m["summary"].split(" ")[0] for m in res["exchange"]][:4] == ["REGISTER", "401", "REGISTER", "403"]
    assert ladder_labels(page, "sip")[3].startswith("403")
    page.screenshot(path=str(artifacts / "sip-digest-auth-wrong-password.png"), full_page=True)


def test_options_over_tls_shows_the_certificate(page: Any, server: str, kamailio_md5: KamailioPeer,
                                                artifacts: Path) -> None:
    k = kamailio_md5
    page.goto(f"{server}/")
    res = run_form(page, "sip", {"host": "127.0.0.1", "port": str(k.tls_port)},
                   selects={"operation": "options", "transport": "tls"}, checks={"tls-verify": False})
    assert res["success"] is True, res["error"]
    tls = page.locator("#sip-result table.tls")
    assert tls.locator('tr[data-key="subject"] td').text_content() == res["tls"]["subject"]
    assert "skinnysip test server" in (res["tls"]["subject"] or "")
    assert tls.locator('tr[data-key="verified"] td').text_content() == "false"
    assert ladder_labels(page, "sip")[-1] == "200 OK (tls)"
    page.screenshot(path=str(artifacts / "sip-options-tls.png"), full_page=True)
    # TLS plaintext goes into the pcap as exported PDUs that tshark dissects as SIP
    pcap = save_download(page, "#sip-result button.download-pcap", artifacts / "sip-options-tls.pcapng")
    rows = tshark_rows(pcap, "exported_pdu.dst_port", "sip.Method", "sip.Status-Code", "frame.comment")
    assert [r[:3] for r in rows] == [[str(k.tls_port), "OPTIONS", ""], [split(res["exchange"][0]["local"])[1], "", "200"]]
    assert all("TLS plaintext" in r[3] for r in rows)
    assert_clean_capture(pcap)


def test_sips_scheme_posts_to_the_sips_route(page: Any, server: str, kamailio_md5: KamailioPeer) -> None:
    k = kamailio_md5
    page.goto(f"{server}/")
    page.select_option("#sip-scheme", "sips")
    assert page.locator("#sip-transport").is_disabled()
    res = run_form(page, "sip", {"host": "127.0.0.1", "port": str(k.tls_port)}, checks={"tls-verify": False})
    assert res["success"] is True, res["error"]
    assert res["exchange"][0]["summary"].startswith("OPTIONS sips:")
    assert "/api/sips/options" in (page.locator("#sip-result .headline").text_content() or "")


def test_api_errors_show_next_to_their_field(page: Any, server: str) -> None:
    page.goto(f"{server}/")
    page.fill("#sip-host", "not a host!")
    page.fill("#sip-port", "70000")
    page.click("#sip-run")
    host_error = page.locator("#sip-host-error")
    host_error.wait_for()
    assert page.get_attribute("#sip-host", "aria-invalid") == "true"
    assert "sip-host-error" in (page.get_attribute("#sip-host", "aria-describedby") or "")
    assert page.locator("#sip-port-error").text_content()
    assert page.locator("#sip-result").is_hidden()
    # fixed host and port, digest-auth without a username: the API names `username`
    page.fill("#sip-host", "127.0.0.1")
    page.fill("#sip-port", "5060")
    page.select_option("#sip-operation", "digest-auth")
    page.click("#sip-run")
    page.locator("#sip-username-error").wait_for()
    assert "required" in (page.locator("#sip-username-error").text_content() or "").lower()
    assert page.locator("#sip-host-error").count() == 0


def test_tls_verified_with_the_ca_file_field(page: Any, server: str, kamailio_md5: KamailioPeer,
                                             artifacts: Path, tmp_path: Path) -> None:
    """The CA-file field: Kamailio's self-signed certificate verifies when it is the CA given
    (a path on the server's disk), a file that is no PEM bundle is named at the field."""
    k = kamailio_md5
    page.goto(f"{server}/")
    res = run_form(page, "sip", {"host": "127.0.0.1", "port": str(k.tls_port), "ca-file": k.ca_file},
                   selects={"operation": "options", "transport": "tls"}, checks={"tls-verify": True})
    assert res["success"] is True, res["error"]
    assert page.locator('#sip-result table.tls tr[data-key="verified"] td').text_content() == "true"
    page.screenshot(path=str(artifacts / "sip-options-tls-ca-file.png"), full_page=True)
    # without it the same certificate is refused (the system CAs do not know it)
    res = run_form(page, "sip", {"host": "127.0.0.1", "port": str(k.tls_port), "ca-file": ""},
                   selects={"operation": "options", "transport": "tls"}, checks={"tls-verify": True})
    assert res["success"] is False and "certificate" in (res["error"] or "").lower()
    not_pem = tmp_path / "not-a-ca.pem"
    not_pem.write_text("hello\n")
    page.fill("#sip-ca-file", str(not_pem))
    page.click("#sip-run")
    page.locator("#sip-ca-file-error").wait_for()
    assert "cannot load it" in (page.locator("#sip-ca-file-error").text_content() or "")
    page.fill("#sip-ca-file", str(tmp_path / "missing.pem"))
    page.click("#sip-run")
    page.wait_for_selector('#sip-ca-file-error:has-text("no such file")')


def test_traceroute_from_the_page_lists_each_hop(page: Any, server: str, kamailio_md5: KamailioPeer) -> None:
    page.goto(f"{server}/")
    assert page.locator("#sip-max-hops").is_hidden() and page.locator("#sip-method").is_hidden()
    res = run_form(page, "sip", {"host": "127.0.0.1", "port": str(kamailio_md5.udp_port), "max-hops": "5"},
                   selects={"operation": "traceroute"})
    assert res["reached"] is True and [h["statusCode"] for h in res["hops"]] == [483, 200]
    rows = page.locator("#sip-result table.hops tbody tr").all()
    assert len(rows) == 2
    cells = [r.locator("td").all_text_contents() for r in rows]
    assert "483" in cells[0] and "200" in cells[1] and "0" in cells[0] and "1" in cells[1]
    assert field(page, "sip", "reached") == "true"


def test_any_request_from_the_page_with_fields_and_a_body(page: Any, server: str, kamailio_md5: KamailioPeer) -> None:
    page.goto(f"{server}/")
    page.select_option("#sip-operation", "request")
    res = run_form(page, "sip", {"host": "127.0.0.1", "port": str(kamailio_md5.udp_port), "method": "FETCH",
                                 "headers": "X-Probe: page\nX-Second: 2", "body": "hello", "local-ip": "127.0.0.2"})
    assert res["method"] == "FETCH" and res["statusCode"] == 404, res
    sent = res["exchange"][0]
    assert sent["local"].startswith("127.0.0.2:")
    assert "\r\nX-Probe: page\r\nX-Second: 2\r\n" in sent["raw"] and sent["raw"].endswith("\r\n\r\nhello")
    # a field skinnysip writes itself: the API's error lands next to the header fields
    page.fill("#sip-headers", "Via: SIP/2.0/UDP 10.0.0.1")
    page.click("#sip-run")
    page.locator("#sip-headers-error").wait_for()
    assert "written by skinnysip itself" in (page.locator("#sip-headers-error").text_content() or "")


def test_usrloc_from_the_page_registers_and_comes_back(page: Any, server: str) -> None:
    """The usrloc operation against Kamailio's PBX: username and password required, the method
    chosen from a list, the result's fields and a ladder with our request coming back to us."""
    from sip_peers import kamailio

    page.goto(f"{server}/")
    assert page.locator("#sip-usrloc-method").is_hidden() and page.locator("#sip-expires").is_hidden()
    page.select_option("#sip-operation", "usrloc")
    assert page.locator("#sip-username").get_attribute("required") is not None
    assert page.locator("#sip-expires").is_visible() and page.locator("#sip-digest-checks").is_hidden()
    with kamailio(pbx=True) as pbx:
        res = run_form(page, "sip", {"host": "127.0.0.1", "port": str(pbx.udp_port), "domain": pbx.realm,
                                     "username": "alice", "password": pbx.users["alice"], "expires": "30"},
                       selects={"usrloc-method": "OPTIONS"})
        assert res["success"] and res["delivered"] and res["method"] == "OPTIONS", res
        assert res["registerStatus"] == 200 and res["unregistered"] is True and pbx.contacts("alice") == []
        assert "Expires: 30" in res["exchange"][0]["raw"]
    assert field(page, "sip", "delivered") == "true" and field(page, "sip", "hops") == "1"
    assert f"OPTIONS {res['deliveredUri']} (udp)" in ladder_labels(page, "sip")  # the request, back to us
