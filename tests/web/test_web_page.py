"""The page and the API docs without internet, keyboard use, a phone-sized screen, and the
static facts of the page (its device-type list is the SCCP table's)."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from sip_peers import KamailioPeer
from webtools import run_form

from skinnysip.api.app import WEB_DIR, app
from skinnysip.sccp.enums import DEVICE_TYPES


def api_operations() -> list[tuple[str, str]]:
    schema = app.openapi()
    return [(method.upper(), path) for path, item in schema["paths"].items() for method in item]


def test_docs_render_every_operation_offline(page: Any, server: str, artifacts: Path) -> None:
    """Swagger UI's assets come from this server: with everything but 127.0.0.1 blocked (the
    page fixture aborts and records any other request), every operation is listed."""
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    page.goto(f"{server}/docs")
    ops = api_operations()
    page.wait_for_function("n => document.querySelectorAll('.opblock').length >= n", arg=len(ops))
    shown = {(b.locator(".opblock-summary-method").text_content(), b.locator(".opblock-summary-path").get_attribute("data-path"))
             for b in page.locator(".opblock").all()}
    assert set(ops) <= shown
    assert "skinnysip" in (page.locator(".information-container .info").first.text_content() or "")
    page.screenshot(path=str(artifacts / "docs.png"), full_page=False)
    assert requested and all(u.startswith(server) or u.startswith("data:") for u in requested), requested
    assert page.guard.blocked == []  # type: ignore[attr-defined]


def test_redoc_renders_offline(page: Any, server: str, artifacts: Path) -> None:
    page.goto(f"{server}/redoc")
    page.get_by_text("/api/sip/options").first.wait_for()
    page.get_by_text("/api/pcap").first.wait_for()
    page.screenshot(path=str(artifacts / "redoc.png"), full_page=False)
    # ReDoc's bundle wants its vendor's logo from a CDN: the page's Content-Security-Policy stops
    # it in the browser, so no request is even attempted (the route guard saw none)
    assert page.guard.blocked == []  # type: ignore[attr-defined]
    assert page.locator('img[alt="redocly logo"]').count() == 0  # it hides itself on failure


def test_keyboard_only_on_a_phone_sized_screen(phone_page: Any, server: str, kamailio_md5: KamailioPeer,
                                               artifacts: Path) -> None:
    page = phone_page
    page.goto(f"{server}/")
    # every control has a label (its accessible name) and can be reached by Tab
    unlabeled = page.evaluate("""() => [...document.querySelectorAll('input, select, button')]
        .filter(e => !e.labels?.length && !e.getAttribute('aria-label') && !e.textContent.trim())
        .map(e => e.id)""")
    assert unlabeled == []
    # tabs: focus the SIP tab, ArrowRight selects SCCP, ArrowLeft back
    page.focus("#tab-sip")
    page.keyboard.press("ArrowRight")
    assert page.get_attribute("#tab-sccp", "aria-selected") == "true"
    assert page.locator("#panel-sccp").is_visible() and page.locator("#panel-sip").is_hidden()
    page.screenshot(path=str(artifacts / "phone-sccp-form.png"), full_page=True)
    page.keyboard.press("ArrowLeft")
    assert page.evaluate("document.activeElement.id") == "tab-sip"
    # from the tab list (one Tab stop), Tab walks the two doc links, then the form in order
    order = []
    for _ in range(6):
        page.keyboard.press("Tab")
        order.append(page.evaluate("document.activeElement.id || document.activeElement.textContent"))
    assert order == ["API docs", "ReDoc", "sip-operation", "sip-scheme", "sip-host", "sip-port"]
    page.keyboard.press("Shift+Tab")
    assert page.evaluate("document.activeElement.id") == "sip-host"
    page.keyboard.type("127.0.0.1")
    page.keyboard.press("Tab")
    page.keyboard.type(str(kamailio_md5.udp_port))
    page.locator("#sip-host").press("Enter")  # Enter in a field submits the form
    page.locator("#sip-result .headline").wait_for()
    assert "200 OK: success" in (page.locator("#sip-result .headline").text_content() or "")
    # nothing but the ladder's own scroller is wider than the screen
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    assert page.evaluate("document.querySelector('.ladder-wrap').scrollWidth > 0")
    page.screenshot(path=str(artifacts / "phone-sip-result.png"), full_page=True)
    # the ladder's messages are reachable by keyboard: focus one, Enter shows it raw
    page.focus('#sip-result g.msg[data-index="0"]')
    page.keyboard.press("Enter")
    assert (page.locator("#sip-result .message-detail pre.raw").text_content() or "").startswith("OPTIONS ")


def test_laptop_sip_form_and_sccp_form_screenshots(page: Any, server: str, artifacts: Path,
                                                   kamailio_md5: KamailioPeer) -> None:
    page.goto(f"{server}/")
    page.screenshot(path=str(artifacts / "laptop-sip-form.png"), full_page=True)
    page.click("#tab-sccp")
    page.screenshot(path=str(artifacts / "laptop-sccp-form.png"), full_page=True)
    page.click("#tab-sip")
    res = run_form(page, "sip", {"host": "127.0.0.1", "port": str(kamailio_md5.udp_port)})
    assert res["success"] is True


def test_page_device_types_are_the_sccp_table() -> None:
    class Options(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.inside = False
            self.values: list[tuple[int, str]] = []
            self.selected: list[int] = []
            self._value: int | None = None

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            a = dict(attrs)
            if tag == "select":
                self.inside = a.get("id") == "sccp-device-type"
            elif tag == "option" and self.inside:
                self._value = int(a["value"] or "")
                if "selected" in a:
                    self.selected.append(self._value)

        def handle_endtag(self, tag: str) -> None:
            if tag == "select":
                self.inside = False

        def handle_data(self, data: str) -> None:
            if self._value is not None and data.strip():
                self.values.append((self._value, data.strip()))
                self._value = None

    parser = Options()
    parser.feed((WEB_DIR / "index.html").read_text())
    assert [v for v, _ in parser.values] == list(DEVICE_TYPES)
    assert all(text == f"{DEVICE_TYPES[v]} ({v})" for v, text in parser.values)
    assert parser.selected == [7]  # the API's default (7960)


def test_page_loads_nothing_from_elsewhere() -> None:
    for name in ("index.html", "app.js", "phone.js", "audio-worklet.js", "style.css"):
        text = (WEB_DIR / name).read_text()
        assert not re.search(r"(?:src|href)\s*=\s*[\"']?(?:https?:)?//", text), name
        assert "@import" not in text and "fonts.googleapis" not in text, name
