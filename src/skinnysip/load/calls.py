"""The ``call``, ``user`` and ``answer`` load scenarios: attempts on
:class:`~skinnysip.phone.sip_phone.SIPPhone` objects (see :mod:`skinnysip.load.scenarios`).
A module of its own so the transaction scenarios (``options``, ``register``, ``message``) do
not import the phone and media stack."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import importlib.util
import inspect
import itertools
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from time import monotonic  # call times at full resolution on any loop (skinnysip.net.event_loop)
from typing import Any

from skinnysip.addresses import hostport
from skinnysip.net.sip_endpoint import SIPTransportError
from skinnysip.net.sip_transport import closed_by_peer, route_ip
from skinnysip.phone.api import (
    Call,
    CallState,
    IncomingCall,
    PhoneError,
    RegistrationChanged,
    RegistrationState,
)
from skinnysip.phone.sip_phone import MAX_CALLS, SIPAccount, SIPCall, SIPPhone
from skinnysip.sip.transactions import LayerEvent, RequestReceived, SuccessRetransmission, UnmatchedResponse

from .scenarios import LoadConfig, Scenario, User, exception_note, record_failure
from .stats import Counters

__all__ = ["AnswerScenario", "PhoneScenario", "load_user_function"]

MAX_REGISTERING = 50  # registrations (and closes: unregistrations) in flight at once
MAX_CALL_SECONDS = 86_400.0  # the answer scenario's longest call without a hold time (s)


class PhoneScenario(Scenario):
    """Calls and user scenarios on :class:`SIPPhone` objects: one account per user, a new
    phone for a user when its phones are all at ``MAX_CALLS`` calls (each on its own local
    port, from ``local_ports`` when given)."""

    def __init__(self, config: LoadConfig, counters: Callable[[], Counters]) -> None:
        super().__init__(config, counters)
        self.phones: dict[str, list[SIPPhone]] = {}
        self.busy: dict[int, int] = {}  # id(phone) -> attempts running on it
        self._ports = itertools.count(config.local_ports[0]) if config.local_ports else None
        self._lock = asyncio.Lock()
        self._retired = 0  # retransmissions of phones already closed
        self.function: Callable[[SIPPhone, int], Awaitable[Any]] | None = None

    async def open(self) -> None:
        c = self.config
        if c.scenario == "user":
            assert c.user_script is not None
            self.function = load_user_function(c.user_script)
        self.open_message_log()
        # one phone up front: a server that cannot be reached fails the run at once
        await self._phone(c.user_for(0), reserve=False)

    async def _new_phone(self, user: User, *, register: bool = False, listen: bool = False) -> SIPPhone:
        """A started phone for ``user`` through the server (``register``: registered with
        ``expires`` and refreshing; ``listen``: no server, listening on ``host:port`` itself:
        both for :class:`AnswerScenario`). ``PhoneError``/``SIPTransportError`` when the server
        cannot be reached or the port cannot be listened on."""
        c = self.config
        port = 0
        if self._ports is not None and not listen:
            assert c.local_ports is not None
            port = next(self._ports)
            if port > c.local_ports[1]:
                raise PhoneError(f"no free local port left in {c.local_ports[0]}-{c.local_ports[1]}")
        answering = register or listen  # the runner refuses calls at -l (counted), not the phone
        account = SIPAccount(
            aor=f"sip:{user.user}@{c.sip_domain}", password=user.password, auth_user=user.auth_user,
            outbound_proxy=None if listen else hostport(c.host, c.server_port), transport=c.transport,
            ws_path=c.ws_path,
            tls_verify=c.tls_verify, ca_file=c.ca_file, register=register, expires=c.expires, source=c.source,
            codecs=c.codecs, srtp=c.srtp, t1=c.t1, timeout=c.timeout,
            listen_host=c.host if listen else c.source_ip or (route_ip(c.host) if port else None),
            listen_port=c.server_port if listen else port, rtp_ports=c.rtp_ports, record_dir=c.record_dir,
            max_calls=c.limit + MAX_CALLS if answering else MAX_CALLS, packet_log=False, inband_dtmf=False,
            identity_key=c.identity_key, identity_x5u=c.identity_x5u, identity_attest=c.identity_attest)
        phone = SIPPhone(account)
        # no wire trace (load), unless every message goes to the --trace-msg file
        phone.endpoint.trace.enabled = self.message_log is not None
        phone.endpoint.trace.listener = self.message_log
        try:
            await phone.start()
        except BaseException:
            await phone.close()
            raise
        phone.endpoint.add_handler(functools.partial(self._unexpected, phone))  # offered before the phone's own
        phone.on_call_ended = self._call_ended  # every call's, a user scenario's too
        return phone

    def _call_ended(self, call: Call) -> None:
        """Remember an ended call's Call-ID (:class:`CallLedger`): a message for it within
        33 s is SIPp's DeadCallMsgs, not OutOfCallMsgs."""
        if isinstance(call, SIPCall):
            self.ledger.end(call.call_id, asyncio.get_running_loop().time())

    def _unexpected(self, phone: SIPPhone, event: LayerEvent) -> bool:
        """Count a response matching no transaction, or an in-dialog request, for no call the
        phone has now (SIPp's OutOfCallMsgs, DeadCallMsgs), and an out-of-dialog OPTIONS
        (AutoAnswered); the phone still handles each (a 2xx retransmission of a live call is
        ACKed again, a request for no dialog gets 481, the OPTIONS 200)."""
        if isinstance(event, UnmatchedResponse | SuccessRetransmission):
            call_id = event.response.call_id
        elif isinstance(event, RequestReceived) and event.request.to_tag is not None:
            call_id = event.request.call_id
        else:
            if isinstance(event, RequestReceived):
                self.auto_answers(event.request)
            return False
        if not any(isinstance(call, SIPCall) and call.call_id == call_id for call in phone.calls):
            self.stray(call_id)
        return False

    async def _phone(self, user: User, *, reserve: bool = True) -> SIPPhone:
        async with self._lock:
            phones = self.phones.setdefault(user.user, [])
            for phone in phones:
                if self.busy.get(id(phone), 0) < MAX_CALLS:
                    break
            else:
                phone = await self._new_phone(user)
                phones.append(phone)
            if reserve:
                self.busy[id(phone)] = self.busy.get(id(phone), 0) + 1
            return phone

    def _release(self, phone: SIPPhone) -> None:
        self.busy[id(phone)] = max(0, self.busy.get(id(phone), 0) - 1)

    async def close(self) -> None:
        """Close every phone (calls hung up, registrations removed), at most
        :data:`MAX_REGISTERING` at once, each bounded to 10 s."""
        gate = asyncio.Semaphore(MAX_REGISTERING)

        async def close_one(phone: SIPPhone) -> None:
            async with gate:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(phone.close(), 10)
                self._retired += phone.endpoint.retransmissions
                transport = phone.endpoint.transport
                self.counters().dropped(transport.malformed_count, transport.last_malformed)

        await asyncio.gather(*(close_one(phone) for phones in self.phones.values() for phone in phones))
        self.phones.clear()
        self.close_message_log()

    def retransmissions(self) -> int:
        return self._retired + sum(p.endpoint.retransmissions for ps in self.phones.values() for p in ps)

    async def attempt(self, index: int) -> None:
        started = monotonic()
        user = self.config.user_for(index)  # once: a RANDOM order draws again on each call
        try:
            phone = await self._phone(user)
        except (PhoneError, SIPTransportError) as exc:
            kind = "FailedTcpConnect" if self.config.transport != "udp" else "FailedCannotSendMessage"
            record_failure(self.counters(), "transport", kind, note=str(exc))
            return
        try:
            if self.function is not None:
                await self._user(phone, index, started)
            else:
                await self._call(phone, user, started)
        finally:
            self._release(phone)

    async def _user(self, phone: SIPPhone, index: int, started: float) -> None:
        assert self.function is not None
        try:
            result = await self.function(phone, index)
        except Exception as exc:  # the user's code: any failure is that attempt's failure
            record_failure(self.counters(), type(exc).__name__, "FailedCallRejected", note=exception_note(exc))
            return
        if result is False:
            record_failure(self.counters(), "false", "FailedCallRejected", note=f"scenario returned False (attempt {index})")
        else:
            self.counters().success(None, monotonic() - started)

    async def _call(self, phone: SIPPhone, user: User, started: float) -> None:
        c = self.config
        target = c.target_for(user)
        assert target is not None
        counters = self.counters()
        try:
            call = await phone.call(target, headers=c.headers_for(user))
        except (PhoneError, SIPTransportError) as exc:
            record_failure(counters, "transport", "FailedCannotSendMessage", note=str(exc))
            return
        try:
            connected = await call.wait_connected(c.timeout + 2.0)
            answered = monotonic() - started
            if call.alerting is not None:  # post-dial delay: INVITE → first 18x (wall clock, both)
                self.counters().alerting_time.add(max(0.0, call.alerting - call.started))
            self.counters().requests_sent += 1 + (1 if call.invite is not None and call.invite.cseq[0] > 1 else 0)
            if not connected:
                self._call_failed(call, answered)
                return
            assert c.hold is not None  # checked by LoadConfig.validate
            ended_early = await call.wait_ended(c.hold)
            if ended_early:
                record_failure(self.counters(), "ended", "FailedUnexpectedMessage", answered, sent=call.invite,
                               note=f"the call ended before --hold: {call.end_reason or 'no reason given'}")
                self.counters().media(call.media_report())
                return
            with contextlib.suppress(PhoneError, SIPTransportError):
                await asyncio.wait_for(call.hangup(), c.timeout + 2.0)
            self.counters().requests_sent += 1  # the BYE
            self.counters().media(call.media_report())
            self.counters().success(answered, monotonic() - started)
        finally:
            if call.state is not CallState.TERMINATED:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(call.hangup(), 5.0)

    def _call_failed(self, call: SIPCall, elapsed: float) -> None:
        counters = self.counters()
        final = call.handle.transaction.final_response if call.handle is not None else None
        reason = call.end_reason or ""
        if final is not None and final.status_code >= 300:
            record_failure(counters, str(final.status_code), "FailedUnexpectedMessage", elapsed, sent=call.invite,
                           received=final)
        elif "Timer" in reason or not reason or call.state is not CallState.TERMINATED:
            kind = "FailedMaxUDPRetrans" if self.config.transport == "udp" and "Timer" in reason else "FailedTimeoutOnRecv"
            record_failure(counters, "timeout", kind, sent=call.invite, note=reason or "not answered in time")
        else:
            kind = "FailedTcpClosed" if closed_by_peer(reason) else "FailedCannotSendMessage"
            record_failure(counters, "transport", kind, sent=call.invite, note=reason)


class AnswerScenario(PhoneScenario):
    """The called side (``answer``, SIPp ``-sn uas`` behind a registration): one registered
    phone per user of this runner's share, and each call the server brings to one is an
    attempt (:meth:`LoadRunner.admit`): our 180 goes out on arrival, the 200 with the SDP
    answer at once or after ``ring`` seconds, media both ways with RTCP until the caller's
    BYE (or ours after ``hold`` seconds when one is given). Success: the ACK confirmed the
    call and either BYE ended it; its response time is INVITE → ACK, its length INVITE → the
    end. Failed: ``cancelled`` (CANCEL before the answer or the ACK), ``timeout`` (no ACK
    within ``timeout``), ``ended`` (ended otherwise, e.g. a session timer), ``media`` (the
    answer could not be sent), ``limit`` (the runner's). Users that cannot register are
    counted in :attr:`Counters.registration_failures` with their reason, as is a
    registration lost while running (a refresh refused or unanswered; the phone goes on
    trying); when none can register, :meth:`open` raises :class:`PhoneError`. At
    :meth:`close` the calls left are hung up and every user unregisters. With ``register``
    False no user registers: one phone listens on ``host:port`` and answers every call sent
    there (SIPp ``-sn uas``); :meth:`open` raises ``ValueError`` when it cannot listen there."""

    answers = True

    def __init__(self, config: LoadConfig, counters: Callable[[], Counters]) -> None:
        super().__init__(config, counters)
        self._watchers: list[asyncio.Task[None]] = []
        self._lost: set[int] = set()  # id() of phones whose registration was lost while running

    def users(self) -> list[User]:
        """This runner's users: ``users[index_start::index_step]`` (one ``load`` user
        without a users file, on the first runner only)."""
        c = self.config
        return c.users[c.index_start::c.index_step] if c.users else ([User("load")] if c.index_start == 0 else [])

    async def open(self) -> None:
        c = self.config
        self.open_message_log()
        if not c.register:  # SIPp -sn uas: the calls come to host:port itself
            try:
                phone = await self._new_phone(User("load"), listen=True)
            except (PhoneError, SIPTransportError) as exc:  # a busy port: a local error, not an unreachable server
                raise ValueError(str(exc)) from None
            self.phones["load"] = [phone]
            self._watchers.append(asyncio.get_running_loop().create_task(self._watch(phone)))
            return
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(MAX_REGISTERING)
        registering: list[asyncio.Task[str | None]] = []
        next_at = loop.time()
        try:
            for user in self.users():  # paced at the rate, as SIPp's -r paces its REGISTER scenario
                if self.halted():
                    break
                if next_at > loop.time():
                    await asyncio.sleep(next_at - loop.time())
                next_at = max(next_at + 1.0 / c.rate, loop.time() - 1.0)
                await gate.acquire()
                registering.append(loop.create_task(self._register(user, gate)))
            refusals = [r for r in await asyncio.gather(*registering) if r is not None]
        except BaseException:
            for task in registering:
                task.cancel()
            await self.close()
            raise
        if registering and len(refusals) == len(registering):
            await self.close()
            raise PhoneError(f"no user could register: {refusals[0]}"
                             + (f" (and {len(refusals) - 1} more)" if len(refusals) > 1 else ""))

    async def _register(self, user: User, gate: asyncio.Semaphore) -> str | None:
        """Register ``user``'s phone; None when registered, else the reason (one line),
        counted in :attr:`Counters.registration_failures`."""
        try:
            try:
                phone = await self._new_phone(user, register=True)
            except (PhoneError, SIPTransportError, ValueError) as exc:  # ValueError: a user name no AOR takes
                reason = f"{user.user}: {exc}"
            else:
                if phone.registration is RegistrationState.REGISTERED:
                    self.phones.setdefault(user.user, []).append(phone)
                    self.counters().registered += 1
                    self._watchers.append(asyncio.get_running_loop().create_task(self._watch(phone)))
                    return None
                reason = f"{user.user}: {phone.registration_reason or 'not registered'}"
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(phone.close(), 10)
            self.counters().not_registered(reason)
            return reason
        finally:
            gate.release()

    async def _watch(self, phone: SIPPhone) -> None:
        """Each call brought to ``phone`` becomes an attempt, or is refused as the runner says."""
        while not phone.closed:
            event = await phone.next_event(60.0)
            if (isinstance(event, RegistrationChanged) and event.state is RegistrationState.FAILED
                    and id(phone) not in self._lost):  # a refresh refused or unanswered: counted once
                self._lost.add(id(phone))
                self.counters().not_registered(f"{phone.aor.user}: lost its registration: {event.reason}")
            if not isinstance(event, IncomingCall) or not isinstance(event.call, SIPCall):
                continue
            call = event.call
            refusal = self.admit(self._answer(call))
            if refusal is not None and call.state is CallState.INCOMING:
                with contextlib.suppress(PhoneError, SIPTransportError):
                    await asyncio.wait_for(call.reject(refusal), 5.0)

    async def attempt(self, index: int) -> None:
        raise PhoneError("the answer scenario starts no attempts: the callers do")

    async def _answer(self, call: SIPCall) -> None:
        c = self.config
        started = monotonic()
        counters = self.counters
        try:
            if c.ring > 0 and await call.wait_ended(c.ring):  # ringing (our 180 is out)
                record_failure(counters(), "cancelled", "FailedCallRejected", received=call.invite,
                               note=f"ended while ringing: {call.end_reason or 'no reason given'}")
                return
            try:
                await asyncio.wait_for(call.answer(), c.timeout)
            except (PhoneError, SIPTransportError, TimeoutError) as exc:
                if call.state is CallState.TERMINATED and "cancel" in (call.end_reason or ""):
                    record_failure(counters(), "cancelled", "FailedCallRejected", received=call.invite,
                                   note=f"cancelled by the caller before the answer: {call.end_reason}")
                else:
                    record_failure(counters(), "media", "FailedCannotSendMessage", received=call.invite,
                                   note=f"could not answer: {exc or type(exc).__name__}")
                return
            if not await call.wait_connected(c.timeout + 2.0):  # the ACK (Timer H is 64·T1)
                reason = call.end_reason or "no ACK"
                status = "cancelled" if "cancel" in reason else "timeout"
                record_failure(counters(), status, "FailedTimeoutOnRecv" if status == "timeout" else "FailedCallRejected",
                               received=call.invite, note=f"the answer was not acknowledged: {reason}")
                return
            acknowledged = monotonic() - started
            ended = await call.wait_ended(c.hold if c.hold is not None else MAX_CALL_SECONDS)
            if ended and call.end_reason != "BYE received":
                record_failure(counters(), "ended", "FailedUnexpectedMessage", acknowledged, received=call.invite,
                               note=f"the call ended without a BYE: {call.end_reason or 'no reason given'}")
                counters().media(call.media_report())
                return
            if not ended:  # hold passed: our BYE
                with contextlib.suppress(PhoneError, SIPTransportError):
                    await asyncio.wait_for(call.hangup(), c.timeout + 2.0)
                counters().requests_sent += 1
            counters().media(call.media_report())
            counters().success(acknowledged, monotonic() - started)
        finally:
            if call.state is not CallState.TERMINATED:  # aborted, or the run ended first: hang up
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(call.hangup(), 5.0)

    async def close(self) -> None:
        for task in self._watchers:
            task.cancel()
        self._watchers.clear()
        await super().close()  # every call hung up, every user unregistered


def load_user_function(path: str) -> Callable[[SIPPhone, int], Awaitable[Any]]:
    """The ``async def scenario(phone, index)`` of a Python file, or ``module:function``
    (an importable module's coroutine function, e.g. ``mypkg.scenarios:call_and_hold``).
    ``ValueError`` with one line when it cannot be loaded or is not a coroutine function."""
    file = Path(path)
    if not file.is_file() and re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", path):
        module_name, _, name = path.partition(":")
        try:
            imported = importlib.import_module(module_name)
        except Exception as exc:
            raise ValueError(f"user scenario {path!r}: cannot import {module_name}: {exc}") from exc
        function = getattr(imported, name, None)
        if function is None or not inspect.iscoroutinefunction(function):
            raise ValueError(f"user scenario {path!r}: {name} is not an async function")
        return function  # type: ignore[no-any-return]
    if not file.is_file():
        raise ValueError(f"user scenario {path!r}: no such file")
    spec = importlib.util.spec_from_file_location(f"skinnysip_user_scenario_{file.stem}", file)
    if spec is None or spec.loader is None:
        raise ValueError(f"user scenario {path!r}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise ValueError(f"user scenario {path!r} failed to load: {type(exc).__name__}: {exc}") from exc
    function = getattr(module, "scenario", None)
    if function is None or not inspect.iscoroutinefunction(function):
        raise ValueError(f"user scenario {path!r}: define 'async def scenario(phone, index)'")
    return function  # type: ignore[no-any-return]
