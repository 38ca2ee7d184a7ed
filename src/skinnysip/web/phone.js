// skinnysip web page: the softphone panel on the phone API (/api/phones), audio in the browser
// over the call's audio WebSocket, and the lab panel (/api/lab). Uses app.js's helpers (el,
// formBody, showErrors, clearErrors, ladderBlock). Live state comes from the phone's event
// WebSocket only; nothing here polls the server.
"use strict";

const AUDIO_RATE = 8000;            // Hz of the audio socket's PCM (s16le mono), both ways
const MIC_SOCKET_BACKLOG = 16000;   // bytes (1 s) queued on the socket before mic frames are dropped
const LOG_LINES = 200;              // event log lines kept in the page
const MESSAGES_KEPT = 200;          // instant messages kept in the page
const LOCAL_HOSTS = new Set(["localhost", "127.0.0.1", "[::1]", "::1"]);

// ------------------------------------------------------------------ API calls

// fetch JSON with a deadline; answers {status, data}; data is {success:false, error} when not JSON
async function api(method, url, body, timeoutMs = 40000) {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), timeoutMs);
  try {
    const init = { method, signal: ctl.signal, headers: authHeaders() };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const resp = await fetch(url, init);
    if (resp.status === 401) needToken();
    let data;
    try { data = await resp.json(); } catch { data = { success: false, error: `HTTP ${resp.status}: not JSON` }; }
    return { status: resp.status, data };
  } catch (err) {
    const error = err.name === "AbortError" ? "the server did not answer in time" : `request failed: ${err.message}`;
    return { status: 0, data: { success: false, error } };
  } finally {
    clearTimeout(timer);
  }
}

function wsUrl(path) {
  return `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}${path}`;
}

// Answers of 400 name a field of `box` (shown there); others go to box's .form-error.
function showApiError(box, result) {
  const { status, data } = result;
  const text = status === 401 ? TOKEN_NEEDED : data.error || `HTTP ${status}`;
  if (status === 400 || status === 422) showErrors(box, text);
  else showErrors(box, status ? `${text} (HTTP ${status})` : text);
}

// ------------------------------------------------------------------ audio in the browser

// One call's audio: the server's PCM played through the "pcm-player" worklet (jitter buffer)
// into an AnalyserNode and the speakers; the microphone through "pcm-capture" back to the server.
class CallAudio {
  constructor(phoneId, callId, onStatus) {
    this.url = wsUrl(`/api/phones/${phoneId}/calls/${callId}/audio`);
    this.onStatus = onStatus;
    this.ctx = null; this.ws = null; this.player = null; this.analyser = null;
    this.micStream = null; this.capture = null; this.micDropped = 0; this.micSent = 0;
    this.server = {}; this.buffer = {};
    this.closed = false;
  }

  async open() {
    // the context runs at the socket's rate: Chromium resamples to the device, and the
    // analyser's bins are 8000/fftSize Hz wide
    try {
      this.ctx = new AudioContext({ sampleRate: AUDIO_RATE, latencyHint: "interactive" });
    } catch {
      this.ctx = new AudioContext({ latencyHint: "interactive" });
    }
    await this.ctx.audioWorklet.addModule("/web/audio-worklet.js");
    this.player = new AudioWorkletNode(this.ctx, "pcm-player", {
      numberOfInputs: 0, outputChannelCount: [1], processorOptions: { inputRate: AUDIO_RATE },
    });
    this.player.port.onmessage = (ev) => { this.buffer = ev.data; this.report(); };
    this.analyser = this.ctx.createAnalyser();
    this.analyser.fftSize = 2048;
    this.analyser.smoothingTimeConstant = 0.2;
    this.player.connect(this.analyser);
    this.analyser.connect(this.ctx.destination);
    await this.ctx.resume();
    await new Promise((resolve, reject) => {
      const ws = this.ws = openSocket(this.url);
      ws.binaryType = "arraybuffer";
      const timer = setTimeout(() => reject(new Error("the audio socket did not open in 10 s")), 10000);
      ws.onopen = () => { clearTimeout(timer); resolve(); };
      ws.onerror = () => { clearTimeout(timer); reject(new Error("the audio socket failed")); };
      ws.onmessage = (ev) => this.received(ev.data);
      ws.onclose = (ev) => { this.server.closed = ev.reason || `closed (${ev.code})`; this.report(); this.close(); };
    });
  }

  received(data) {
    if (typeof data === "string") {
      try { Object.assign(this.server, JSON.parse(data)); } catch { /* not ours */ }
      this.report();
      return;
    }
    const pcm = new Int16Array(data);  // s16le: every browser we run on is little-endian
    this.player.port.postMessage(pcm, [pcm.buffer]);
  }

  // the dominant frequency (Hz) of what is played now, and its level (dBFS); null in silence
  peak() {
    if (!this.analyser) return null;
    const bins = new Float32Array(this.analyser.frequencyBinCount);
    this.analyser.getFloatFrequencyData(bins);
    let best = 1;
    for (let i = 2; i < bins.length; i++) if (bins[i] > bins[best]) best = i;
    if (!(bins[best] > -70)) return null;
    return { hz: Math.round(best * this.ctx.sampleRate / this.analyser.fftSize), db: Math.round(bins[best]) };
  }

  async startMic() {
    this.micStream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false, channelCount: 1 },
    });
    const source = this.ctx.createMediaStreamSource(this.micStream);
    this.capture = new AudioWorkletNode(this.ctx, "pcm-capture", {
      numberOfOutputs: 1, outputChannelCount: [1], processorOptions: { outputRate: AUDIO_RATE, frame: 160 },
    });
    this.capture.port.onmessage = (ev) => this.sendMic(ev.data);
    const mute = this.ctx.createGain();
    mute.gain.value = 0;  // the capture node runs while pulled by the destination, silently
    source.connect(this.capture).connect(mute).connect(this.ctx.destination);
    this.micNodes = [source, mute];
  }

  sendMic(pcm) {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    if (ws.bufferedAmount > MIC_SOCKET_BACKLOG) { this.micDropped += 1; return; }  // bounded: drop, count
    ws.send(pcm.buffer);
    this.micSent += 1;
  }

  stopMic() {
    if (this.micStream) for (const t of this.micStream.getTracks()) t.stop();
    if (this.capture) this.capture.disconnect();
    for (const n of this.micNodes || []) n.disconnect();
    this.micStream = null; this.capture = null; this.micNodes = [];
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify({ mic: false }));
  }

  report() {
    if (this.onStatus) this.onStatus(this);
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    this.stopMic();
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) this.ws.close(1000);
    if (this.ctx) this.ctx.close().catch(() => {});
    this.report();
  }
}

// ------------------------------------------------------------------ the softphone

const phone = {
  id: null, protocol: "sip", ws: null, calls: new Map(), selected: null, audio: null,
  audioCall: null, details: new Map(), detailTimers: new Map(), incoming: null,
};

function $(id) { return document.getElementById(id); }

function logLine(text) {
  const list = $("phone-log");
  list.append(el("li", { text: `${new Date().toLocaleTimeString()} ${text}` }));
  while (list.children.length > LOG_LINES) list.firstElementChild.remove();
}

function setRegistration(reg) {
  const state = reg ? reg.state : "none";
  $("phone-reg-state").textContent = reg ? state : "no phone";
  $("phone-reg-state").dataset.state = state;
  const extras = reg ? [reg.expires ? `${reg.expires} s` : "", reg.outbound ? `outbound, Flow-Timer ${reg.flowTimer ?? "none"}` : "",
    reg.gruu ? `GRUU ${reg.gruu}` : "",
    reg.serviceRoute && reg.serviceRoute.length ? `Service-Route ${reg.serviceRoute.join(", ")}` : "",
    reg.serverAuthenticated === true ? "registrar proved the password (rspauth)" : "",
    reg.serverAuthenticated === false ? "registrar's rspauth does NOT match" : ""].filter(Boolean) : [];
  $("phone-reg-reason").textContent = reg && reg.reason ? `(${[reg.reason, ...extras].join(", ")})` : "";
}

// One watched target's line in the list: a busy lamp (idle/calling/ringing/busy) or a presence.
function setWatch(w) {
  const key = `${w.event} ${w.uri}`;
  let item = [...$("phone-watches").children].find((li) => li.dataset.key === key);
  if (!item) {
    item = el("li", {});
    item.dataset.key = key;
    $("phone-watches").append(item);
  }
  const shown = w.event === "dialog" ? (w.lamp || "idle") : (w.basic || "unknown");
  item.dataset.event = w.event;
  item.dataset.state = shown;
  const extra = w.event === "dialog"
    ? (w.dialogs || []).map((d) => `${d.state}${d.remote ? ` with ${d.remote}` : ""}`).join(", ")
    : [...(w.activities || []), ...(w.notes || [])].join(", ");
  item.textContent = `${w.uri} — ${w.event === "dialog" ? "lamp" : "presence"}: ${shown}${extra ? ` (${extra})` : ""}`
    + (w.state === "failed" ? ` — ${w.reason}` : "");
}

function setWatches(list) {
  $("phone-watches").replaceChildren();
  for (const w of list || []) setWatch(w);
}

// The voicemail lamp (RFC 3842): the last summary the phone heard, or its subscription's state.
// ``mw``: the phone view's messageWaiting, or a messageWaiting event (no subscription field).
function setLamp(mw) {
  const lamp = $("phone-mwi-lamp");
  if (!mw || (mw.waiting === null && (!mw.subscription || mw.subscription === "off"))) {
    lamp.hidden = true;
    lamp.dataset.waiting = "";
    return;
  }
  const voice = (mw.counts || {})["voice-message"];
  let text;
  if (mw.waiting === true) text = `✉ messages waiting${voice ? `: ${voice.new} new, ${voice.old} old` : ""}`;
  else if (mw.waiting === false) text = `no new messages${voice ? ` (${voice.old} old)` : ""}`;
  else text = `voicemail: ${mw.subscription}${mw.reason ? ` (${mw.reason})` : ""}`;
  lamp.textContent = text;
  lamp.dataset.waiting = mw.waiting === true ? "yes" : mw.waiting === false ? "no" : "";
  lamp.hidden = false;
}

function syncProtocol() {
  const sccp = $("phone-protocol").value === "sccp";
  for (const n of document.querySelectorAll("#phone-form .sip-only")) n.hidden = sccp;
  for (const n of document.querySelectorAll("#phone-form .sccp-only")) n.hidden = !sccp;
  const ws = ["ws", "wss"].includes($("phone-transport").value);
  for (const n of document.querySelectorAll("#phone-form .ws-only")) n.hidden = sccp || !ws;
  $("phone-target").placeholder = sccp ? "600 (a number)" : "bob, 600 or sip:bob@example.com";
}

function setupPhoneForm() {
  const form = $("phone-form");
  // the SCCP device types are the SCCP tester's list (one copy in the page)
  const types = $("phone-device-type");
  for (const opt of $("sccp-device-type").options) types.append(opt.cloneNode(true));
  types.value = "7";
  $("phone-protocol").addEventListener("change", syncProtocol);
  $("phone-transport").addEventListener("change", syncProtocol);
  syncProtocol();
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearErrors(form);
    if (phone.id) await unregister();
    const body = formBody(form);
    $("phone-register").disabled = true;
    $("phone-status").textContent = "Starting the phone …";
    setRegistration({ state: body.register === false ? "unregistered" : "registering", reason: "" });
    const result = await api("POST", "/api/phones", body, 130000);
    $("phone-register").disabled = false;
    if (result.status !== 201) {
      $("phone-status").textContent = `Refused (HTTP ${result.status || "—"})`;
      setRegistration(null);
      showApiError(form, result);
      return;
    }
    const data = result.data;
    phone.id = data.id;
    phone.protocol = data.protocol;
    phone.calls.clear();
    $("phone-status").textContent = data.state === "starting"
      ? `Phone ${data.id} (${data.protocol}) is starting (the server has not answered yet)`
      : `Phone ${data.id} (${data.protocol}) is up`;
    setRegistration(data.registration);
    setLamp(data.messageWaiting);
    setWatches(data.watches);
    $("phone-unregister").disabled = false;
    $("phone-live").hidden = false;
    renderCalls();
    connectEvents(data.id);
  });
  $("phone-unregister").addEventListener("click", unregister);
}

async function unregister() {
  if (!phone.id) return;
  const id = phone.id;
  $("phone-unregister").disabled = true;
  $("phone-status").textContent = "Hanging up and unregistering …";
  stopAudio();
  phone.id = null;  // nothing more is asked about this phone
  const result = await api("DELETE", `/api/phones/${id}`, undefined, 60000);
  if (phone.ws) { phone.ws.onclose = null; phone.ws.close(1000); phone.ws = null; }
  $("phone-status").textContent = result.status === 200 ? `Phone ${id} closed` : `Phone ${id}: ${result.data.error}`;
  setRegistration(result.data.registration || { state: "unregistered", reason: "" });
  setLamp(null);
  setWatches([]);
  $("phone-incoming").hidden = true;
}

const EVENT_RETRIES = 5;        // reconnections of a lost event stream before giving up
const EVENT_RETRY_MS = 1000;

function connectEvents(id, attempt = 0) {
  const ws = phone.ws = openSocket(wsUrl(`/api/phones/${id}/events`));
  ws.onopen = () => {
    // what happened before the socket was open (the first NOTIFY of a mailbox comes within
    // the phone's start) or during a reconnection gap is not replayed: take the state once
    resync(id);
    attempt = 0;
  };
  ws.onmessage = (ev) => {
    let data;
    try { data = JSON.parse(ev.data); } catch { return; }
    onEvent(data);
  };
  ws.onclose = (ev) => {
    if (phone.ws !== ws) return;
    phone.ws = null;
    logLine(`event stream closed: ${ev.reason || ev.code}`);
    if (ev.code === 4404 || ev.code === 1000) {
      phone.id = null;
      $("phone-unregister").disabled = true;
      setRegistration({ state: "unregistered", reason: ev.reason || "phone closed" });
    } else if (phone.id === id && attempt < EVENT_RETRIES) {
      setTimeout(() => { if (phone.id === id && !phone.ws) connectEvents(id, attempt + 1); }, EVENT_RETRY_MS);
    } else if (phone.id === id) {
      $("phone-status").textContent = "Lost the phone's event stream; reload the page to follow it again.";
    }
  };
}

async function resync(id) {
  const result = await api("GET", `/api/phones/${id}`);
  if (result.status !== 200 || phone.id !== id) return;
  setRegistration(result.data.registration);
  setLamp(result.data.messageWaiting);
  setWatches(result.data.watches);
  for (const c of result.data.calls || []) Object.assign(callOf(c.id), c);
  renderCalls();
  renderSelected();
}

function callOf(id) {
  let call = phone.calls.get(id);
  if (!call) {
    call = { id, direction: "outgoing", remote: "", state: "calling", localHold: false, remoteHold: false, muted: false,
             media: null };
    phone.calls.set(id, call);
  }
  return call;
}

function onEvent(ev) {
  switch (ev.event) {
    case "registration":
      setRegistration(ev);
      logLine(`registration ${ev.state} ${ev.reason || ""}`);
      break;
    case "incomingCall": {
      const call = callOf(ev.call);
      Object.assign(call, { direction: "incoming", remote: ev.remote, state: "incoming", identity: ev.identity });
      phone.incoming = ev.call;
      $("phone-incoming-from").textContent = ev.remote;
      $("phone-incoming-identity").textContent = ev.identity ? `— ${identityText(ev.identity)}` : "";
      $("phone-incoming").hidden = false;
      ringing(true);
      logLine(`incoming call ${ev.call} from ${ev.remote}`);
      if (phone.selected === null || !liveState(callOf(phone.selected).state)) selectCall(ev.call);
      renderCalls();
      break;
    }
    case "callState": {
      const call = callOf(ev.call);
      Object.assign(call, { state: ev.state, remote: ev.remote || call.remote, localHold: ev.localHold,
        remoteHold: ev.remoteHold, muted: Boolean(ev.muted), reason: ev.reason, protocolState: ev.protocolState });
      logLine(`call ${ev.call} ${ev.state} ${ev.reason || ""}${ev.protocolState ? ` [${ev.protocolState}]` : ""}`
              + (ev.remoteReason ? ` — the far end says: ${ev.remoteReason}` : ""));
      if (phone.incoming === ev.call && ev.state !== "incoming") {
        phone.incoming = null;
        $("phone-incoming").hidden = true;
        ringing(false);
      }
      if (ev.state === "terminated" && phone.audioCall === ev.call) stopAudio();
      renderCalls();
      if (phone.selected === ev.call) { renderSelected(); loadDetail(ev.call); }
      break;
    }
    case "media": {
      const call = callOf(ev.call);
      call.media = ev.media;
      if (phone.selected === ev.call) {
        renderQuality(call);
        const band = document.querySelector("#phone-call-ladder text.rtp-label");
        const rtp = rtpBand(ev.media);
        if (band && rtp) band.textContent = rtpLabel(rtp);  // the band's counts follow the call
      }
      break;
    }
    case "dtmf":
      logLine(`call ${ev.call}: DTMF ${ev.digit} received (${ev.method})`);
      break;
    case "message":
      addMessage("in", ev.from, ev.text);
      logLine(`message from ${ev.from}`);
      break;
    case "messageWaiting": {  // the voicemail server's RFC 3842 summary
      setLamp(ev);
      const counts = Object.entries(ev.counts || {}).map(([kind, n]) => `${kind} ${n.new} new / ${n.old} old`);
      logLine(`voicemail${ev.account ? ` ${ev.account}` : ""}: ${ev.waiting ? "messages waiting" : "no new messages"}`
        + (counts.length ? ` (${counts.join(", ")})` : ""));
      break;
    }
    case "presence":  // a watched presentity's PIDF (RFC 3863)
      setWatch({ uri: ev.uri, event: "presence", state: "active", basic: ev.basic, notes: ev.notes,
        activities: ev.activities });
      logLine(`presence of ${ev.uri}: ${ev.basic || "unknown"}${(ev.notes || []).length ? ` (${ev.notes.join("; ")})` : ""}`);
      break;
    case "dialogState":  // a watched line's dialogs (RFC 4235): the busy lamp
      setWatch({ uri: ev.uri, event: "dialog", state: "active", lamp: ev.state, dialogs: ev.dialogs });
      logLine(`busy lamp ${ev.uri}: ${ev.state}`);
      break;
    case "overflow":
      logLine(`${ev.dropped} events lost (the page was too slow)`);
      break;
    case "error":
      logLine(`error: ${ev.reason}`);
      break;
    case "actionDone": {  // an action the server answered 202 for has ended
      const what = ev.call ? `call ${ev.call}: ${ev.action}` : ev.action;
      logLine(`${what} ${ev.success ? "done" : `failed: ${ev.reason || "refused"}`}`);
      if (ev.action === "start" && phone.id) {
        $("phone-status").textContent = ev.success ? `Phone ${phone.id} is up` : `Phone ${phone.id} failed to start: ${ev.reason}`;
      }
      break;
    }
    default:
      break;
  }
}

// the Softphone tab says so while a call rings in (the page may be on another tab)
function ringing(on) {
  const tab = $("tab-phone");
  tab.textContent = on ? "Softphone: ringing" : "Softphone";
  tab.classList.toggle("ringing", on);
}

function liveState(state) { return state !== "terminated"; }

function renderCalls() {
  const tbody = document.querySelector("#phone-calls tbody");
  const rows = [];
  for (const call of phone.calls.values()) {
    const hold = call.localHold ? "held by us" : call.remoteHold ? "held by them" : "";
    const pick = el("button", { type: "button", class: "pick", "aria-pressed": phone.selected === call.id ? "true" : "false",
      "aria-label": `Select call ${call.id} with ${call.remote}`, onclick: () => selectCall(call.id) }, "Select");
    rows.push(el("tr", { "data-call": call.id, "data-state": call.state, class: phone.selected === call.id ? "selected" : null },
      el("td", { text: String(call.id) }), el("td", { text: call.direction }), el("td", { text: call.remote }),
      el("td", { class: "state", text: call.state }), el("td", { text: hold }), el("td", {}, pick)));
  }
  tbody.replaceChildren(...rows);
  const replaces = $("phone-transfer-replaces");
  const keep = replaces.value;
  replaces.replaceChildren(el("option", { value: "", text: "— blind —" }),
    ...[...phone.calls.values()].filter((c) => c.id !== phone.selected && c.state === "confirmed")
      .map((c) => el("option", { value: String(c.id), text: `call ${c.id} with ${c.remote}` })));
  replaces.value = [...replaces.options].some((o) => o.value === keep) ? keep : "";
}

function selectCall(id) {
  if (phone.selected !== id && phone.audio) stopAudio();
  phone.selected = id;
  $("phone-call-panel").hidden = false;
  renderCalls();
  renderSelected();
  loadDetail(id);
}

// A caller's STIR/SHAKEN identity (RFC 8224, RFC 8588) as the phone's check found it.
function identityText(identity) {
  const claims = `attestation ${identity.attest || "?"}, ${identity.orig || "?"} → ${(identity.dest || []).join(", ")}`;
  return identity.verified
    ? `caller identity verified (${claims}; certificate chain ${identity.chain})`
    : `caller identity NOT verified: ${identity.code} ${identity.reason} (${claims})`;
}

function renderSelected() {
  const call = phone.calls.get(phone.selected);
  if (!call) return;
  $("phone-call-identity").hidden = !call.identity;
  $("phone-call-identity").textContent = call.identity ? identityText(call.identity) : "";
  if (call.identity) $("phone-call-identity").dataset.verified = String(call.identity.verified);
  $("phone-call-title").textContent = `Call ${call.id}: ${call.direction} ${call.direction === "incoming" ? "from" : "to"} ${call.remote}`;
  $("phone-call-state").textContent = call.state + (call.localHold ? " (on hold)" : call.remoteHold ? " (held by the far end)" : "")
    + (call.muted ? " (muted)" : "");
  $("phone-call-state").dataset.state = call.state;
  $("phone-call-reason").textContent = call.reason ? `— ${call.reason}` : "";
  const up = call.state === "confirmed";
  $("phone-hangup").disabled = !liveState(call.state);
  $("phone-hold").disabled = !up || call.localHold;
  $("phone-resume").disabled = !up || !call.localHold;
  $("phone-mute").disabled = !up;
  $("phone-mute").textContent = call.muted ? "Unmute" : "Mute";
  $("phone-mute").setAttribute("aria-pressed", String(Boolean(call.muted)));
  $("phone-transfer-go").disabled = !up;
  $("phone-listen").disabled = !up && phone.audioCall !== call.id;
  for (const b of document.querySelectorAll("#phone-dialpad button")) b.disabled = !up;
  renderQuality(call);
}

// How the call's media is protected: the SRTP suite and where its keys came from (SDES in the
// SDP, or a DTLS handshake and our role in it), the DTLS state while there are no keys yet.
function security(m) {
  const dtls = m.dtls && (m.dtls.rtp || Object.values(m.dtls)[0]);
  if (dtls && dtls.error) return `DTLS-SRTP failed: ${dtls.error}`;
  if (m.srtp) return `SRTP ${m.srtp.suite}, ${dtls ? `DTLS ${dtls.role}` : "SDES"} keys`;
  if (dtls) return `DTLS-SRTP ${dtls.state}`;
  return "none (RTP)";
}

function renderQuality(call) {
  const m = call.media;
  const tbody = document.querySelector("#phone-quality tbody");
  if (!m) { tbody.replaceChildren(el("tr", {}, el("td", { text: "no media yet" }))); return; }
  const q = m.quality || {};
  const rx = m.received || {}, tx = m.sent || {};
  const rows = [
    ["codec", `${m.codec} ${m.ptime ? Math.round(m.ptime * 1000) + " ms" : ""}`],
    ["packetsSent", tx.packets], ["packetsReceived", rx.packets],
    ["lost", `${rx.lost} (${((rx.loss || 0) * 100).toFixed(1)} %)`],
    ["jitterMs", rx.jitterMs], ["rttMs", m.rttMs === null || m.rttMs === undefined ? "—" : m.rttMs],
    ["mos", q.mos === undefined ? "—" : q.mos], ["rFactor", q.r === undefined ? "—" : q.r],
    ["direction", m.direction], ["remote", m.remote ? m.remote.join(":") : "—"],
    ["security", security(m)],
  ];
  tbody.replaceChildren(...rows.map(([k, v]) => el("tr", { "data-key": k }, el("th", { scope: "row", text: k }),
    el("td", { text: v === undefined || v === null ? "—" : String(v) }))));
}

// The call's ladder, fetched when its state changes (at most one request in flight per call).
function loadDetail(id) {
  if (!phone.id || phone.detailTimers.has(id)) return;
  const phoneId = phone.id;
  phone.detailTimers.set(id, setTimeout(async () => {
    if (phone.id !== phoneId) { phone.detailTimers.delete(id); return; }  // the phone is gone
    const result = await api("GET", `/api/phones/${phoneId}/calls/${id}`);
    phone.detailTimers.delete(id);
    if (result.status !== 200 || phone.selected !== id) return;
    const data = result.data;
    const call = callOf(id);
    if (data.media) call.media = data.media;
    if (data.identity && !call.identity) { call.identity = data.identity; renderSelected(); }
    phone.details.set(id, data);
    const box = $("phone-call-ladder");
    const block = ladderBlock({ exchange: data.exchange }, phone.protocol === "sccp" ? "sccp" : "sip", data.media);
    callPcapButton(block, phoneId, id);
    box.replaceChildren(block);
    renderQuality(call);
  }, 150));
}

// A call's pcapng comes from the server (GET …/calls/{id}/pcap): its signalling and its RTP/RTCP
// both ways, which the page does not hold. Replaces the ladder's exchange-only download.
function callPcapButton(block, phoneId, id) {
  const old = block.querySelector("button.download-pcap");
  if (!old) return;
  const status = old.nextElementSibling;
  const name = `skinnysip-call${id}-${stamp()}.pcapng`;
  const button = el("button", { type: "button", class: "download-pcap", onclick: async () => {
    button.disabled = true;
    status.textContent = "Writing pcapng (SIP and RTP) …";
    try {
      const resp = await fetch(`/api/phones/${encodeURIComponent(phoneId)}/calls/${id}/pcap`,
        { headers: authHeaders({}) });
      if (!resp.ok) {
        let err = `HTTP ${resp.status}`;
        try { const body = await resp.json(); err = body.error || body.detail || err; } catch { /* keep the status */ }
        status.textContent = `pcap failed: ${err}`;
        return;
      }
      download(await resp.blob(), name);
      status.textContent = "pcapng downloaded (signalling and RTP)";
    } catch (e) {
      status.textContent = `pcap failed: ${e.message}`;
    } finally {
      button.disabled = false;
    }
  } }, "Download pcapng (with RTP)");
  old.replaceWith(button);
}

async function callAction(action, body, box) {
  const id = phone.selected;
  if (!phone.id || id === null) return null;
  box = box || $("phone-call-panel");
  clearErrors(box);
  const result = await api("POST", `/api/phones/${phone.id}/calls/${id}/${action}`, body, 60000);
  if (result.status === 202) {  // not finished after the server's answer wait: it goes on
    logLine(`call ${id}: ${action} still going on (its outcome comes as an event)`);
    return null;
  }
  if (result.status !== 200) { showApiError(box, result); return null; }
  // the state is the event stream's (an answer may be older than the events already here)
  renderCalls();
  renderSelected();
  return result.data;
}

// A form of the live phone: its submit does ``act(form)`` once the old errors are cleared, and
// nothing without a phone.
function onPhoneForm(id, act) {
  const form = $(id);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearErrors(form);
    if (phone.id) await act(form);
  });
}

function setupCallControls() {
  onPhoneForm("phone-dial", async (form) => {
    $("phone-call").disabled = true;
    const result = await api("POST", `/api/phones/${phone.id}/calls`, formBody(form), 60000);
    $("phone-call").disabled = false;
    if (result.status === 202) {  // the target's server is slow to reach: the call follows as events
      logLine(`calling ${formBody(form).target || ""}: still reaching the server`);
      return;
    }
    if (result.status !== 201) { showApiError(form, result); return; }
    const known = phone.calls.has(result.data.id);  // its events may have come first
    const call = callOf(result.data.id);
    Object.assign(call, { direction: "outgoing", remote: result.data.remote });
    if (!known) call.state = result.data.state;
    selectCall(call.id);
  });
  $("phone-answer").addEventListener("click", async () => {
    if (phone.incoming === null) return;
    selectCall(phone.incoming);
    await callAction("answer", undefined, $("phone-incoming"));
  });
  $("phone-reject").addEventListener("click", async () => {
    if (phone.incoming === null) return;
    selectCall(phone.incoming);
    await callAction("reject", { code: 486 }, $("phone-incoming"));
  });
  $("phone-hangup").addEventListener("click", () => callAction("hangup"));
  $("phone-hold").addEventListener("click", () => callAction("hold"));
  $("phone-resume").addEventListener("click", () => callAction("resume"));
  $("phone-mute").addEventListener("click", () => {
    const call = phone.calls.get(phone.selected);
    callAction(call && call.muted ? "unmute" : "mute");
  });
  $("phone-transfer").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const form = $("phone-transfer");
    const body = formBody(form);
    const done = await callAction("transfer", body, form);
    if (done) logLine(`call ${phone.selected} transferred to ${body.target}`);
  });
  const pad = $("phone-dialpad");
  for (const key of ["1", "2", "3", "4", "5", "6", "7", "8", "9", "*", "0", "#"]) {
    pad.append(el("button", { type: "button", "data-digit": key, "aria-label": `DTMF ${key}`, onclick: async () => {
      const done = await callAction("dtmf", { digits: key, duration: 120 });
      if (done) $("phone-dtmf-sent").textContent = `sent ${key}`;
    } }, key));
  }
  onPhoneForm("phone-message", async (form) => {
    const body = formBody(form);
    const result = await api("POST", `/api/phones/${phone.id}/messages`, body, 60000);
    if (result.status !== 200 && result.status !== 202) { showApiError(form, result); return; }
    addMessage("out", body.target, result.status === 202 ? `${body.text} (not answered yet)` : body.text);
    $("phone-message-text").value = "";
  });
  onPhoneForm("phone-watch", async (form) => {
    const result = await api("POST", `/api/phones/${phone.id}/watches`, formBody(form));
    if (result.status !== 201) { showApiError(form, result); return; }
    setWatch(result.data);
    $("phone-watch-target").value = "";
  });
  onPhoneForm("phone-presence", async (form) => {
    const body = formBody(form);
    const result = await api("POST", `/api/phones/${phone.id}/presence`, body, 60000);
    if (result.status !== 200 && result.status !== 202) { showApiError(form, result); return; }
    logLine(`presence published: ${body.basic}${body.note ? ` (${body.note})` : ""}`);
  });
  $("phone-listen").addEventListener("click", () => (phone.audio ? stopAudio() : startAudio(false)));
  $("phone-mic").addEventListener("click", () => {
    if (phone.audio && phone.audio.micStream) { phone.audio.stopMic(); micButton(false); return; }
    startAudio(true);
  });
  const local = LOCAL_HOSTS.has(location.hostname) && window.isSecureContext;
  $("phone-mic").disabled = !local;
  $("phone-mic-hint").textContent = local
    ? "Listen plays the call here; Microphone sends this browser's microphone into the call instead of the account's source."
    : `The microphone is off on ${location.hostname}: browsers give it only to secure pages (HTTPS, or http://localhost / http://127.0.0.1). Open this page on the machine running skinnysip as http://127.0.0.1:${location.port || 80}/ to speak; Listen works everywhere.`;
}

function micButton(on) {
  $("phone-mic").setAttribute("aria-pressed", on ? "true" : "false");
  $("phone-mic").textContent = on ? "Microphone off" : "Microphone";
}

function audioStatus(audio) {
  if (phone.audio !== audio) return;
  const s = audio.server, b = audio.buffer;
  const parts = [];
  if (s.rate) parts.push(`${s.format} ${s.rate} Hz`);
  if (b.played !== undefined) parts.push(`buffer ${b.bufferedMs} ms, underruns ${b.underruns}, dropped ${b.dropped}`);
  if (s.framesDropped) parts.push(`server dropped ${s.framesDropped} frames`);
  if (audio.micStream) parts.push(`mic: sent ${audio.micSent} frames, dropped ${audio.micDropped} here, ${s.micDropped || 0} at the server`);
  if (s.event === "audioEnd" || s.closed) parts.push(`ended: ${s.reason || s.closed}`);
  $("phone-audio-status").textContent = parts.join(" · ");
}

async function startAudio(withMic) {
  const id = phone.selected;
  if (!phone.id || id === null) return;
  const box = $("phone-call-panel");
  clearErrors(box);
  try {
    if (!phone.audio) {
      const audio = new CallAudio(phone.id, id, audioStatus);
      phone.audio = audio;
      phone.audioCall = id;
      await audio.open();
      $("phone-listen").setAttribute("aria-pressed", "true");
      $("phone-listen").textContent = "Stop listening";
    }
    if (withMic) {
      await phone.audio.startMic();
      micButton(true);
    }
  } catch (err) {
    stopAudio();
    showErrors(box, `audio: ${err.message}`);
  }
}

function stopAudio() {
  if (phone.audio) phone.audio.close();
  phone.audio = null;
  phone.audioCall = null;
  $("phone-listen").setAttribute("aria-pressed", "false");
  $("phone-listen").textContent = "Listen";
  micButton(false);
}

// what the page hears now (shown, and read by the browser tests)
function hearing() {
  const now = phone.audio ? phone.audio.peak() : null;
  const out = $("phone-hearing");
  if (out) out.textContent = now ? `hearing ${now.hz} Hz at ${now.db} dB` : phone.audio ? "hearing silence" : "";
  return now;
}

function addMessage(direction, who, text) {
  const list = $("phone-messages");
  list.append(el("li", { class: `im ${direction}`, "data-direction": direction },
    el("strong", { text: direction === "in" ? `${who} → me: ` : `me → ${who}: ` }), text));
  while (list.children.length > MESSAGES_KEPT) list.firstElementChild.remove();
}

// Phones outlive the page (until deleted or idle): after a reload the panel can follow one.
async function listPhones() {
  const result = await api("GET", "/api/phones", undefined, 10000);
  const phones = result.status === 200 ? result.data.phones || [] : [];
  const select = $("phone-existing");
  select.replaceChildren(...phones.map((p) => el("option", { value: p.id,
    text: `${p.id}: ${p.account.aor || p.account.deviceName || p.protocol} (${p.registration.state}, ${p.calls.length} call(s))` })));
  $("phone-existing-box").hidden = phones.length === 0;
  phone.existing = new Map(phones.map((p) => [p.id, p]));
}

function follow() {
  const found = phone.existing && phone.existing.get($("phone-existing").value);
  if (!found) return;
  if (phone.ws) { phone.ws.onclose = null; phone.ws.close(1000); phone.ws = null; }
  stopAudio();
  phone.id = found.id;
  phone.protocol = found.protocol;
  phone.calls.clear();
  for (const c of found.calls) Object.assign(callOf(c.id), c);
  $("phone-status").textContent = `Following phone ${found.id} (${found.protocol})`;
  setRegistration(found.registration);
  setLamp(found.messageWaiting);
  setWatches(found.watches);
  $("phone-unregister").disabled = false;
  $("phone-live").hidden = false;
  $("phone-existing-box").hidden = true;
  renderCalls();
  const live = found.calls.filter((c) => liveState(c.state));
  if (live.length) selectCall(live[live.length - 1].id);
  connectEvents(found.id);
}

// ------------------------------------------------------------------ the lab panel

async function setupLab() {
  if (!$("tab-lab").hidden) return;
  const result = await api("GET", "/api/lab", undefined, 10000);
  if (result.status !== 200 || !result.data || result.data.enabled === false) return;  // no lab: panel stays hidden
  const lab = result.data;
  const tab = $("tab-lab");
  tab.hidden = false;
  const info = $("lab-info");
  const sip = lab.sip || {};
  const addr = el("table", { class: "fields lab-addresses" }, el("caption", { text: "Where the lab listens" }),
    el("tbody", {},
      el("tr", { "data-key": "domain" }, el("th", { scope: "row", text: "SIP domain" }), el("td", { text: lab.domain || "—" })),
      ...Object.entries(sip).map(([t, a]) => el("tr", { "data-key": `sip-${t}` }, el("th", { scope: "row", text: `SIP ${t.toUpperCase()}` }), el("td", { text: a }))),
      el("tr", { "data-key": "sccp" }, el("th", { scope: "row", text: "SCCP call manager" }), el("td", { text: lab.sccp || "—" }))));
  const accounts = (lab.accounts || []).map((a) => el("tr", { "data-user": a.user },
    el("td", { text: a.user }), el("td", { text: a.password }), el("td", { text: a.aor }),
    el("td", {}, el("button", { type: "button", class: "use-account", "data-user": a.user,
      onclick: () => useAccount(lab, a) }, `Use demo account ${a.user}`))));
  const devices = (lab.devices || []).map((d) => el("tr", {}, el("td", { text: d.name }), el("td", { text: d.line }),
    el("td", {}, el("button", { type: "button", class: "use-device", onclick: () => useDevice(lab, d) }, `Use ${d.name}`))));
  const ext = Object.entries(lab.extensions || {}).map(([n, what]) => el("tr", {}, el("td", { text: n }), el("td", { text: what })));
  const head = (...cols) => el("thead", {}, el("tr", {}, ...cols.map((c) => el("th", { scope: "col", text: c }))));
  info.replaceChildren(
    el("h3", { text: "The lab" }),
    el("p", { class: "hint", text: "A PBX and call manager running inside this skinnysip server, with demo accounts and services to call." }),
    addr,
    section("Demo SIP accounts", el("div", { class: "table-wrap" }, el("table", { class: "list lab-accounts" },
      el("caption", { text: "Register one from the softphone" }), head("user", "password", "AOR", ""), el("tbody", {}, ...accounts)))),
    devices.length ? section("SCCP devices", el("div", { class: "table-wrap" }, el("table", { class: "list lab-devices" },
      el("caption", { text: "Stations the call manager knows" }), head("device", "line", ""), el("tbody", {}, ...devices)))) : null,
    section("Extensions", el("div", { class: "table-wrap" }, el("table", { class: "list lab-extensions" },
      el("caption", { text: "Numbers to call" }), head("number", "service"), el("tbody", {}, ...ext)))));
  $("lab-refresh").addEventListener("click", showLabCalls);
  if (location.hash === "#lab" && window.skinnysipSelectTab) window.skinnysipSelectTab("tab-lab");
}

function fillForm(values) {
  for (const [id, value] of Object.entries(values)) {
    const input = $(id);
    if (input.type === "checkbox") input.checked = Boolean(value);
    else input.value = value;
  }
}

function useAccount(lab, account) {
  const sip = lab.sip || {};
  const registrar = sip.udp || sip.tcp || "";
  fillForm({ "phone-protocol": "sip", "phone-aor": account.aor, "phone-password": account.password,
    "phone-auth-user": "", "phone-registrar": registrar, "phone-transport": sip.udp ? "udp" : "tcp",
    "phone-outbound-proxy": "", "phone-proxy-realm": "", "phone-stun-server": "" });
  syncProtocol();
  window.skinnysipSelectTab("tab-phone");
  $("phone-register").focus();
}

function useDevice(lab, device) {
  const at = (lab.sccp || "").lastIndexOf(":");
  fillForm({ "phone-protocol": "sccp", "phone-host": at > 0 ? lab.sccp.slice(0, at).replace(/^\[|\]$/g, "") : lab.sccp,
    "phone-port": at > 0 ? lab.sccp.slice(at + 1) : "", "phone-device-name": device.name });
  syncProtocol();
  window.skinnysipSelectTab("tab-phone");
  $("phone-register").focus();
}

async function showLabCalls() {
  const status = $("lab-status");
  status.textContent = "Loading …";
  const result = await api("GET", "/api/lab/calls", undefined, 10000);
  const box = $("lab-calls");
  if (result.status !== 200) { status.textContent = `failed: ${result.data.error}`; return; }
  const calls = result.data.calls || [];
  status.textContent = `${calls.length} call(s)`;
  box.replaceChildren(...calls.map((c) => el("section", { class: "block lab-call", "data-call-id": c.callId },
    el("h4", { text: `${c.from} → ${c.to} (${c.state})` }),
    ladderBlock({ exchange: c.messages || [] }, "sip"))));
}

// ------------------------------------------------------------------ start

document.addEventListener("DOMContentLoaded", () => {
  setupPhoneForm();
  setupCallControls();
  const hear = el("p", { id: "phone-hearing", class: "status", "aria-live": "off" });
  $("phone-audio-status").after(hear);
  setInterval(hearing, 250);  // the analyser, in the page; no request
  window.skinnysipPhone = { state: phone, hearing };
  setupLab();
  listPhones();
  $("phone-follow").addEventListener("click", follow);
  document.addEventListener("skinnysip-token", () => { setupLab(); listPhones(); });  // a token opens /api/
});
