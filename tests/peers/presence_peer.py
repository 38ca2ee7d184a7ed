"""Kamailio as registrar, small PBX and presence server at once, for presence and busy-lamp-field
(BLF) tests: :func:`kamailio_presence` yields a :class:`PresencePeer`.

One Kamailio 5.6 on free 127.0.0.1 ports (UDP and TCP), realm and domain ``skinnysip.test``
(an alias of the server; the AORs baresip_peer.py gives), users :data:`USERS`:

* registrar: REGISTER challenged (401, qop=auth, MD5), ``save("location")``;
* PBX: a new INVITE/MESSAGE/… to a user goes to the user's binding (``lookup("location")``,
  ``t_relay``); INVITEs are record-routed and tracked by the dialog module (``dlg_manage``);
  in-dialog requests follow the route set (``loose_route``); 480 for a user of
  :data:`USERS` not registered, 404 for anyone else;
* presence server (presence + presence_xml with ``force_active`` 1, presence_dialoginfo,
  presence_mwi; db_text in a copy of /usr/share/kamailio/dbtext/kamailio): every initial
  SUBSCRIBE → ``handle_subscribe()`` (events presence, presence.winfo, xcap-diff, dialog,
  message-summary; another event is refused 489 with Allow-Events), in-dialog SUBSCRIBE
  (refresh, Expires 0) too; PUBLISH → ``handle_publish()``. SUBSCRIBE is answered **202**
  (``subs_respond_200`` 0; Kamailio's default is 200). Subscriptions and publications last
  ``max_expires`` at most;
* BLF from real calls: pua + pua_dialoginfo PUBLISH each tracked call's dialog-info, for
  the caller (From) and the callee (To), to the server itself (pua's ``outbound_proxy``), and
  presence_dialoginfo NOTIFYs every ``Event: dialog`` watcher of that user.
  Kamailio **5.6.3**'s pua_dialoginfo has no ``dialoginfo_set()`` and no ``presence_server``
  parameter (both came later): it follows every dialog the dialog module tracks, and pua's
  ``outbound_proxy`` says where its PUBLISHes go.

Authentication (``auth=True``, the default): INVITE, MESSAGE, SUBSCRIBE and PUBLISH whose
From domain is the realm are proxy-authenticated like sip_peers' ``pbx`` (407, then 403 for a
wrong password or an unknown user); other From domains (``sip:watcher@127.0.0.1``) pass
unchallenged, and so do in-dialog requests (SUBSCRIBE refreshes) and the server's own PUBLISHes
(from its UDP socket). ``auth=False``: only REGISTER is challenged.

What was seen on the wire (verified with raw sockets and baresip 1.0 before any skinnysip
code used this; all on UDP unless said):

* SUBSCRIBE ``Event: dialog`` for sip:bob@skinnysip.test → 202 (``Expires`` capped at
  ``max_expires``), then at once a NOTIFY **without a body** (``Content-Length: 0``, no
  Content-Type) while bob has no call. With ``dummy_dialog=True``
  (presence_dialoginfo ``force_dummy_dialog``) that NOTIFY carries instead
  ``<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="1" state="full"
  entity="sip:bob@skinnysip.test"><dialog id="615293b33c62dec073e05d9421e9f48b"
  direction="recipient"><state>terminated</state></dialog></dialog-info>`` (tabs inside).
* A call alice → bob (baresip, bob answering by hand): bob's watcher got ``early`` (a few
  ms after the 180: pua's PUBLISH and the NOTIFY are synchronous, no batching), then
  ``confirmed`` at the 200, ``terminated`` at the BYE (or at the CANCEL of an unanswered
  call: early → terminated), each a full document (``state="full"``); 10–13 s after
  ``terminated`` (pua_dialoginfo publishes it with ``Expires: 10``; the sweep runs every 2 s)
  one more NOTIFY **without a body** (no dialog left). alice's watcher got ``Trying`` (sic,
  capital T: pua_dialoginfo 5.6's spelling, not RFC 4235's ``trying``), ``early``,
  ``confirmed``, ``terminated``. The callee gets no trying state (``callee_trying`` 0).
  Two calls to bob at once: one document with two ``<dialog>`` elements (in no fixed order);
  and a call's ``terminated`` dialog stays in the documents for those 10–13 s, so the next
  call's ``early`` comes beside it (``terminated`` + ``early``).
* Order: presence answers a PUBLISH 200 before it sends the NOTIFYs, and pua holds a dialog's
  next PUBLISH until that 200. With 4 worker processes a caller's watcher once got ``early``
  and then ``Trying`` (CSeq and version higher: the lamp shows a stale state until the next
  change). This server has ONE UDP worker (``children=1``; pua's PUBLISHes come over UDP), so
  each entity's NOTIFYs follow its states; 24 calls (3 runs × 4 calls × auto and manual
  answer) kept the order.
* NOTIFY details: the first NOTIFY of a subscription has **CSeq 2** (then 3, 4…); the
  ``version`` of dialog-info is the server's per-subscription count (the bodiless first NOTIFY
  used 1, so the first document seen is ``version="2"``), +1 for every NOTIFY; pua's PUBLISHes
  all carry ``version="0"``. The ``<dialog id>`` is pua_dialoginfo's (``padi-…``), not the
  Call-ID (``call-id`` attribute). ``local-tag``/``remote-tag`` are only in ``early``
  documents (confirmed/terminated have none), and in confirmed/terminated the callee's local
  ``<target uri>`` is its To URI, not its Contact. Identities come from the INVITE's From/To
  as the caller wrote them: baresip dials ``sip:bob@skinnysip.test;transport=udp``, so that is
  bob's ``<identity>`` and the R-URI of pua's PUBLISH; the ``entity`` attribute of the NOTIFY
  is clean (``sip:bob@skinnysip.test``), rebuilt by presence_dialoginfo.
* Every PUBLISH refresh reaches the watchers as a NOTIFY with the same content (new version):
  pua refreshes a dialog's publication shortly before ``max_expires`` ends it (pua
  ``update_period`` = max(6, max_expires // 2)), and a raw refresh (no body, SIP-If-Match)
  did the same for presence. With ``max_expires=10`` a watcher of a party in a call gets a
  NOTIFY every ~5 s.
* An unsubscribe (SUBSCRIBE Expires: 0) is answered 202 and a final NOTIFY with
  ``Subscription-State: terminated;reason=timeout`` (Kamailio's reason) and the current
  document; a subscription left to expire gets the same NOTIFY ~1 s after its end (expired
  ones are swept every 2 s). A NOTIFY not answered within 500 ms is retransmitted (tm: same
  CSeq and branch).
* SUBSCRIBE ``Event: presence`` + PUBLISH of a PIDF (raw, authenticated as carol): NOTIFY
  with the document re-serialised by libxml2 (line ends LF; baresip's CRLF body came out LF,
  its namespace declarations on one line); removing the publication (PUBLISH Expires: 0, or
  baresip quitting) → NOTIFY with a made-up ``closed`` document:
  ``<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:carol@skinnysip.test"><tuple
  xmlns="urn:ietf:params:xml:ns:pidf" id="t1"><status xmlns="urn:ietf:params:xml:ns:pidf">
  <basic>closed</basic></status></tuple></presence>`` (indented, namespaces repeated). The
  first presence NOTIFY before any PUBLISH has no body either.
* Over TCP (baresip watching over TCP) the NOTIFYs go back over TCP to its Contact.

A dialog-info NOTIFY as Kamailio sent it (lines end CRLF on the wire; the body uses LF)::

    NOTIFY sip:carol@127.0.0.1:46496 SIP/2.0
    Via: SIP/2.0/UDP 127.0.0.1:38067;branch=z9hG4bK1edf.a45e8d95000000000000000000000000.0
    To: <sip:carol@skinnysip.test>;tag=d58eeffa
    From: <sip:bob@skinnysip.test>;tag=78b392672eb3740740f49bf55be6c802-5add5d81
    CSeq: 3 NOTIFY
    Call-ID: c812871add434ab6a2bfffd30a76b4f9
    Content-Length: 625
    User-Agent: kamailio (5.6.3 (x86_64/linux))
    Max-Forwards: 70
    Event: dialog
    Contact: <sip:127.0.0.1:38067;transport=udp>
    Subscription-State: active;expires=58
    Content-Type: application/dialog-info+xml

    <?xml version="1.0"?>
    <dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="2" state="full" entity="sip:bob@skinnysip.test">
      <dialog id="padi-6b1437fc-4b1d-1" call-id="1b0a98c0ebc0d77d" local-tag="87d6dc4bc8686d69" remote-tag="76449cb405738f75" direction="recipient">
        <state>early</state>
        <remote>
          <identity>sip:alice@skinnysip.test</identity>
          <target uri="sip:alice-0x557439245280@127.0.0.1:43770"/>
        </remote>
        <local>
          <identity>sip:bob@skinnysip.test;transport=udp</identity>
          <target uri="sip:bob-0x5619d54d5280@127.0.0.1:35940"/>
        </local>
      </dialog>
    </dialog-info>

The ``confirmed`` one of the same call (``version="3"``) is the same without the tags::

    <dialog id="padi-6b1437fc-4b1d-1" call-id="1b0a98c0ebc0d77d" direction="recipient">
      <state>confirmed</state>
      ... <local>
          <identity>sip:bob@skinnysip.test;transport=udp</identity>
          <target uri="sip:bob@skinnysip.test;transport=udp"/>
        </local>

A PIDF NOTIFY (after a raw PUBLISH for carol), as sent::

    NOTIFY sip:alice@127.0.0.1:51923 SIP/2.0
    Via: SIP/2.0/UDP 127.0.0.1:35236;branch=z9hG4bKb524.42dd2cd0000000000000000000000000.0
    To: <sip:alice@skinnysip.test>;tag=579d5e39
    From: <sip:carol@skinnysip.test>;tag=89ae9251544e0b9da17170872d72c6d6-1e9afab0
    CSeq: 3 NOTIFY
    Call-ID: 9344139e824c4f3f88f0860ea99cc372
    Content-Length: 273
    User-Agent: kamailio (5.6.3 (x86_64/linux))
    Max-Forwards: 70
    Event: presence
    Contact: <sip:127.0.0.1:35236;transport=udp>
    Subscription-State: active;expires=59
    Content-Type: application/pidf+xml

    <?xml version="1.0" encoding="UTF-8"?>
    <presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:carol@skinnysip.test">
      <tuple id="t1">
        <status><basic>open</basic></status>
        <contact>sip:carol@skinnysip.test</contact>
        <note>Lunch</note>
      </tuple>
    </presence>

and the body of one made from baresip's PUBLISH (``pubint``)::

    <?xml version="1.0" encoding="UTF-8" standalone="no"?>
    <presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="sip:dave@skinnysip.test">
      <dm:person id="p4159"><rpid:activities/></dm:person>
      <tuple id="t4109">
        <status>
          <basic>open</basic>
        </status>
        <contact>sip:dave@skinnysip.test</contact>
      </tuple>
    </presence>

baresip 1.0's ``presence`` module (baresip_peer's ``presence=True``; modules/presence in
baresip v1.0.0, read and seen on the wire):

* publisher: only for an account with ``;pubint=N`` (N > 0; baresip_peer's ``pubint``), and only
  when the module loads after ``account`` (it takes the accounts there are then). Once
  registered it PUBLISHes ``Event: presence``, ``Expires: N``, a PIDF with ``<basic>open``
  (the body above, CRLF lines, ``entity`` and ``<contact>`` its AOR) to its AOR through its
  outbound proxy, answering 401/407 with its credentials; at 90 % of N a refresh (no body,
  ``SIP-If-Match``); the commands ``presence_offline`` (``]``) and ``presence_online`` (``[``)
  PUBLISH ``closed``/``open`` at once (with SIP-If-Match); quitting PUBLISHes Expires: 0.
  On a 412 it publishes afresh. It does not publish "busy" during calls. See
  :func:`presence_baresip`.
* subscriber: SUBSCRIBEs ``Event: presence`` (``Expires: 600``, through its outbound proxy,
  authenticated) to every contact of its contacts file with the parameter ``;presence=p2p``
  (baresip_peer's ``watch``), 1 s after start; NOTIFY bodies must be application/pidf+xml
  (else 415); ``<basic>open`` → Online, ``closed`` → Offline (``rpid:away`` → Offline,
  ``rpid:busy``/``on-the-phone`` → Busy); its ``contacts`` command shows each state. It does
  not know ``Event: dialog`` (no BLF). Its own notifier answers SUBSCRIBEs sent to it.

Helpers: :meth:`PresencePeer.subscriptions` (the server's ``active_watchers`` table via
``kamcmd db_text.query``), :meth:`PresencePeer.sent` (every request the server made itself:
its NOTIFYs, pua's PUBLISHes — whole, logged base64 by ``event_route[tm:local-request]``),
:meth:`PresencePeer.received` (every request that reached it, whole),
:meth:`PresencePeer.contacts`/:meth:`PresencePeer.wait_registered`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

from baresip_peer import Baresip, baresip
from sip_peers import (
    SANE_REQUEST,
    KamailioControl,
    digest_check,
    kamailio_head,
    relay_by_transaction,
    start_kamailio,
    stop_group,
)

from peertools import free_port, require

#: in-dialog requests: a SUBSCRIBE refresh or unsubscribe in a subscription's dialog with the
#: server goes to the presence module
IN_DIALOG = relay_by_transaction(in_dialog="""        if (is_method("SUBSCRIBE")) {
            # a refresh or an unsubscribe, in the subscription's dialog with the server
            handle_subscribe();
            exit;
        }
""")

#: the users of the realm and their passwords (REGISTER, and INVITE/MESSAGE/SUBSCRIBE/PUBLISH
#: with ``auth``)
USERS = {"alice": "wonderland", "bob": "builder", "carol": "singer", "dave": "diver"}
#: the realm, the users' domain (``sip:bob@skinnysip.test``: the AOR baresip_peer gives) and an
#: alias of the server, so that presentities and pua_dialoginfo's entities are local
REALM = "skinnysip.test"

_MODULES = ("kex", "corex", "tm", "tmx", "sl", "rr", "pv", "maxfwd", "textops", "siputils", "xlog", "sanity",
            "ctl", "db_text", "usrloc", "registrar", "auth", "dialog", "presence", "presence_xml",
            "presence_dialoginfo", "presence_mwi", "pua", "pua_dialoginfo")


def _module_dir() -> Path:
    for candidate in sorted(Path("/usr/lib").glob("*/kamailio/modules")):
        if (candidate / "presence_dialoginfo.so").exists() and (candidate / "pua_dialoginfo.so").exists():
            return candidate
    raise RuntimeError("kamailio presence modules not found; install kamailio-presence-modules")


def available() -> bool:
    """Whether Kamailio and its presence modules (``kamailio-presence-modules``) are installed:
    for a ``skipif``."""
    if shutil.which("kamailio") is None:
        return False
    try:
        _module_dir()
    except RuntimeError:
        return False
    return True


def _config(*, host: str, udp: int, tcp: int, workdir: Path, max_expires: int, auth: bool,
            dummy_dialog: bool = False) -> str:
    # SUBSCRIBE/PUBLISH/INVITE/MESSAGE from the realm's users: proxy Digest (407) like sip_peers'
    # pbx; the server's own PUBLISHes (pua_dialoginfo, from its UDP socket) are never challenged
    proxy_auth = f"""    if (is_method("INVITE|MESSAGE|SUBSCRIBE|PUBLISH") && $fd == "{REALM}"
            && !($si == "{host}" && $sp == {udp})) {{
        route(PROXY_AUTH);
    }}
""" if auth else ""
    # children=1: ONE worker for UDP. presence answers a PUBLISH 200 *before* it sends the
    # NOTIFYs, and pua holds a dialog's next PUBLISH until that 200; with several workers the
    # next state's NOTIFY could overtake (seen once: a caller's watcher got "early", then
    # "Trying" with a higher CSeq and version). pua's PUBLISHes all come over UDP, so one UDP
    # worker keeps every entity's NOTIFYs in the order of its states.
    return f"""{kamailio_head(host, udp, tcp, children=1)}alias="{REALM}"
alias="localhost:{udp}"
alias="localhost:{tcp}"
tcp_connection_lifetime=60
server_signature=yes
mpath="{_module_dir()}/"

{chr(10).join(f'loadmodule "{m}.so"' for m in _MODULES)}

modparam("ctl", "binrpc", "unix:{workdir}/kamailio_ctl")
modparam("xlog", "buf_size", 16384)
modparam("db_text", "default_connection", "text://{workdir}/db")
modparam("usrloc", "db_mode", 0)
modparam("registrar", "max_expires", 3600)
modparam("registrar", "min_expires", 10)
modparam("auth", "nonce_expire", 60)
modparam("auth", "secret", "skinnysip-presence-secret")
modparam("rr", "enable_full_lr", 1)
# the presence server: subscriptions written through to db_text (subscriptions() reads them),
# expired ones swept every 2 s, SUBSCRIBE answered 202 (as RFC 6665 has it; Kamailio says 200
# by default)
modparam("presence", "db_url", "text://{workdir}/db")
modparam("presence", "max_expires", {max_expires})
modparam("presence", "subs_db_mode", 1)
modparam("presence", "clean_period", 2)
modparam("presence", "db_update_period", 2)
modparam("presence", "subs_respond_200", 0)
modparam("presence_xml", "force_active", 1)
modparam("presence_xml", "integrated_xcap_server", 0)
modparam("presence_dialoginfo", "force_dummy_dialog", {int(dummy_dialog)})
# pua: the client that PUBLISHes each call's dialog-info (pua_dialoginfo) — to this server
# itself; its publications refreshed before the server's max_expires ends them (its timer runs
# every update_period - 5 s and refreshes what ends within update_period, so what it refreshes
# has 5 s left at least)
modparam("pua", "db_url", "text://{workdir}/db")
modparam("pua", "db_mode", 0)
modparam("pua", "update_period", {max(6, max_expires // 2)})
modparam("pua", "outbound_proxy", "sip:{host}:{udp}")
modparam("pua_dialoginfo", "include_callid", 1)
modparam("pua_dialoginfo", "include_tags", 1)
modparam("pua_dialoginfo", "include_localremote", 1)

request_route {{
    xlog("L_NOTICE", "request $rm $ru from $si:$sp ($pr) event=$hdr(Event)\\n");
    xlog("L_NOTICE", "IN-REQUEST $rm $si:$sp $(mb{{s.encode.base64}})\\n");
{SANE_REQUEST}    if (is_method("OPTIONS") && ($rU == $null || $rU == "ping")) {{
        append_to_reply("Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REGISTER, SUBSCRIBE, NOTIFY, PUBLISH, MESSAGE\\r\\n");
        sl_send_reply("200", "OK");
        exit;
    }}
{IN_DIALOG}    if (is_method("REGISTER")) {{
        route(REGISTRAR);
        exit;
    }}
{proxy_auth}    if (is_method("PUBLISH")) {{
        if (!t_newtran()) {{ sl_reply_error(); exit; }}
        handle_publish();
        t_release();
        exit;
    }}
    if (is_method("SUBSCRIBE")) {{
        if (!t_newtran()) {{ sl_reply_error(); exit; }}
        handle_subscribe();
        t_release();
        exit;
    }}
    if (is_method("ACK")) {{
        exit;
    }}
    # the PBX: a new request to a registered user goes to the binding; calls are record-routed
    # and tracked by the dialog module (pua_dialoginfo PUBLISHes their states)
    if (is_method("INVITE")) {{
        record_route();
        dlg_manage();
    }}
    if (!lookup("location")) {{
        if ($rU =~ "^({"|".join(USERS)})$") {{
            sl_send_reply("480", "Temporarily Unavailable");
        }} else {{
            sl_send_reply("404", "Not Found");
        }}
        exit;
    }}
    xlog("L_NOTICE", "lookup -> $ru $du\\n");
    t_relay();
    exit;
}}

route[REGISTRAR] {{
{digest_check("www", "1", USERS, "    ")}    consume_credentials();
    if (!save("location")) {{
        sl_reply_error();
    }}
}}

route[PROXY_AUTH] {{
{digest_check("proxy", "1", USERS, "    ")}    consume_credentials();
}}

# every request the server makes itself (presence's NOTIFYs, pua's PUBLISHes, the dialog
# module's BYEs), whole, on one line: PresencePeer.sent() reads them back
event_route[tm:local-request] {{
    xlog("L_NOTICE", "LOCAL-REQUEST $rm $ru $(mb{{s.encode.base64}})\\n");
}}
"""


@dataclass
class Subscription:
    """One subscription the presence server holds (a row of its ``active_watchers`` table)."""

    presentity: str  # presentity_uri, e.g. sip:bob@skinnysip.test
    event: str  # presence, dialog, message-summary…
    watcher: str  # sip:user@domain of the SUBSCRIBE's From
    contact: str  # the watcher's Contact: where NOTIFYs go
    call_id: str
    expires: float  # seconds left now (the table keeps the absolute time)
    status: int  # 1 active, 2 pending, 3 terminated (Kamailio's numbering)
    remote_cseq: int  # the watcher's last SUBSCRIBE CSeq


@dataclass
class PresencePeer(KamailioControl):
    """A running :func:`kamailio_presence`: where it listens, its users and realm, its log."""

    users: dict[str, str]
    max_expires: int
    auth: bool

    async def wait_registered(self, user: str, timeout: float = 10.0) -> list[str]:
        """Wait (bounded) until ``user`` has a binding; its Contacts. (baresip's REGISTER_OK
        often comes before the test's ctrl_tcp connection, so its event is no signal.)"""
        deadline = time.monotonic() + timeout
        while True:
            found = await asyncio.to_thread(self.contacts, user)
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"{user} did not register with the presence server within {timeout} s")
            await asyncio.sleep(0.1)

    def _table(self, name: str) -> list[list[str]]:
        """The rows of a db_text table as Kamailio has them in memory (``db_text.query``)."""
        out = self.kamcmd("db_text.query", f"select * from {name}")
        rows = []
        for line in out.splitlines():
            line = line.strip()
            if not line or line.startswith(("{", "}", "error")) or ":" not in line:
                continue
            rows.append(_split_dbtext(line))
        return rows

    def subscriptions(self, event: str | None = None) -> list[Subscription]:
        """The server's subscriptions now (its ``active_watchers`` table: presence writes it
        through, ``subs_db_mode`` 1), those of ``event`` only when given."""
        out = []
        now = time.time()
        for row in self._table("active_watchers"):
            # id presentity_uri watcher_username watcher_domain to_user to_domain event event_id
            # to_tag from_tag callid local_cseq remote_cseq contact record_route expires status…
            if len(row) < 17 or not row[0].isdigit():
                continue
            sub = Subscription(presentity=row[1], event=row[6], watcher=f"sip:{row[2]}@{row[3]}",
                               contact=row[13], call_id=row[10], expires=int(row[15] or 0) - now, status=int(row[16] or 0),
                               remote_cseq=int(row[12] or 0))
            if event is None or sub.event == event:
                out.append(sub)
        return out

    def sent(self, method: str = "NOTIFY") -> list[str]:
        """Every request of ``method`` the server has sent itself so far (NOTIFYs to watchers,
        pua_dialoginfo's PUBLISHes, …), whole messages in order, from its log."""
        text = Path(self.log_file).read_text(errors="replace")
        return [base64.b64decode(m.group(2)).decode(errors="replace")
                for m in re.finditer(r"LOCAL-REQUEST (\S+) \S+ (\S+)", text) if m.group(1) == method]

    def received(self, method: str = "PUBLISH") -> list[str]:
        """Every request of ``method`` that reached the server so far (before authentication:
        a challenged request and its authorised retry are both here), whole, in order."""
        text = Path(self.log_file).read_text(errors="replace")
        return [base64.b64decode(m.group(2)).decode(errors="replace")
                for m in re.finditer(r"IN-REQUEST (\S+) \S+ (\S+)", text) if m.group(1) == method]

    def log(self) -> str:
        return Path(self.log_file).read_text(errors="replace")


def _split_dbtext(line: str) -> list[str]:
    """A db_text row: ``:``-separated, ``\\:`` an escaped colon (and ``\\n``…)."""
    fields, cur, i = [], [], 0
    while i < len(line):
        ch = line[i]
        if ch == "\\" and i + 1 < len(line):
            nxt = line[i + 1]
            cur.append({"n": "\n", "r": "\r", "t": "\t", "0": "\0"}.get(nxt, nxt))
            i += 2
            continue
        if ch == ":":
            fields.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    fields.append("".join(cur))
    return fields


@contextlib.contextmanager
def kamailio_presence(*, max_expires: int = 60, auth: bool = True, dummy_dialog: bool = False,
                      host: str = "127.0.0.1", timeout: float = 15.0) -> Iterator[PresencePeer]:
    """Start the presence/BLF Kamailio described in this module on free 127.0.0.1 UDP and TCP
    ports; stop it (and remove its files) at the end.

    ``max_expires``: the longest subscription and publication granted (seconds; a SUBSCRIBE
    or PUBLISH asking more gets this, in its 2xx ``Expires``). ``auth``: proxy-authenticate
    INVITE/MESSAGE/SUBSCRIBE/PUBLISH from the realm's users (see the module docstring).
    ``dummy_dialog``: a dialog NOTIFY with no call to report carries a dummy ``terminated``
    dialog instead of no body. ``timeout``: for it to start (listening on TCP and its control
    socket); a port taken meanwhile makes it start again on others (three tries)."""
    binary = require("kamailio")
    workdir = Path(tempfile.mkdtemp(prefix="skinnysip-kamailio-blf-"))
    log_file = workdir / "kamailio.log"
    cfg = workdir / "kamailio.cfg"
    proc: subprocess.Popen[bytes] | None = None
    try:
        for attempt in range(3):
            shutil.rmtree(workdir / "db", ignore_errors=True)
            shutil.copytree("/usr/share/kamailio/dbtext/kamailio", workdir / "db")
            udp = free_port(socket.SOCK_DGRAM, host)
            tcp = free_port(socket.SOCK_STREAM, host)
            cfg.write_text(_config(host=host, udp=udp, tcp=tcp, workdir=workdir, max_expires=max_expires,
                                   auth=auth, dummy_dialog=dummy_dialog))
            proc = start_kamailio(binary, cfg, log_file, host, tcp, timeout, what="presence", last=attempt == 2)
            if proc is not None:
                break
        yield PresencePeer(host=host, udp_port=udp, tcp_port=tcp, realm=REALM, users=dict(USERS),
                           max_expires=max_expires, auth=auth, log_file=str(log_file),
                           ctl_socket=f"unix:{workdir}/kamailio_ctl", workdir=workdir)
    finally:
        if proc is not None:
            stop_group(proc)
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.asynccontextmanager
async def presence_baresip(peer: PresencePeer, user: str, *, pubint: int = 60, watch: tuple[str, ...] = (),
                           transport: str = "udp", register_timeout: float = 10.0,
                           **options: object) -> AsyncIterator[Baresip]:
    """baresip 1.0 as ``user`` of ``peer`` with its ``presence`` module: registered (waited
    for, bounded), PUBLISHing its PIDF with ``Expires: pubint`` (refreshed, without a body, at
    90 % of it; 0: no publisher; ``open`` once registered; ``await phone.command("presence_offline")`` / ``"presence_online"`` change it),
    SUBSCRIBEd to the presence of each URI of ``watch`` (its ``contacts`` command shows their
    states). ``options``: more of baresip_peer.baresip's (``answermode``, …)."""
    async with baresip(user, peer.users[user], f"{peer.host}:{peer.port(transport)}", transport=transport,
                       presence=True, pubint=pubint, watch=tuple(watch),
                       **options) as phone:  # type: ignore[arg-type]
        await peer.wait_registered(user, register_timeout)
        yield phone
