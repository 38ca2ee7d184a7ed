// skinnysip web page: forms for the SIP/SIPS and SCCP testers of the HTTP API, their results,
// a ladder diagram (SVG) of every exchange, and the exchange as pcapng (POST /api/pcap).
// Plain browser JavaScript, no build step, nothing loaded from anywhere but this server.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";

// ------------------------------------------------------------------ small DOM helpers

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function download(blob, filename) {
  const url = URL.createObjectURL(blob);
  const a = el("a", { href: url, download: filename });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

function stamp() {
  return new Date().toISOString().replace(/[:.]/g, "-").slice(0, 19);
}

// ------------------------------------------------------------------ the API token

// A server beyond loopback wants "Authorization: Bearer <token>" on /api/ requests, and on a
// WebSocket (where a browser cannot set headers) the subprotocol skinnysip.bearer.<token>.
// The token is kept for this tab only (sessionStorage).
const TOKEN_KEY = "skinnysip.token";
const TOKEN_NEEDED = "this server needs its API token: enter it under \"API token\" at the top of the page";

function apiToken() {
  try { return sessionStorage.getItem(TOKEN_KEY) || ""; } catch { return ""; }
}

function authHeaders(extra) {
  const headers = Object.assign({}, extra || {});
  const token = apiToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  return headers;
}

function openSocket(url) {
  const token = apiToken();
  return token ? new WebSocket(url, [`skinnysip.bearer.${token}`]) : new WebSocket(url);
}

function needToken() {
  const box = document.getElementById("token-box");
  box.hidden = false;
  box.open = true;
  document.getElementById("token-status").textContent = "Needed: the server answered 401.";
}

function setupToken() {
  const box = document.getElementById("token-box");
  if (apiToken()) box.hidden = false;
  document.getElementById("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const value = document.getElementById("api-token").value.trim();
    try {
      if (value) sessionStorage.setItem(TOKEN_KEY, value); else sessionStorage.removeItem(TOKEN_KEY);
    } catch { /* storage off: the token lasts until the page is left */ }
    document.getElementById("api-token").value = "";
    document.getElementById("token-status").textContent = value ? "Token set for this tab." : "Token cleared.";
    document.dispatchEvent(new Event("skinnysip-token"));
  });
}

// ------------------------------------------------------------------ tabs

function setupTabs() {
  const tabs = Array.from(document.querySelectorAll('[role="tab"]'));
  const shown = () => tabs.filter((t) => !t.hidden);
  function select(tab, focus) {
    for (const t of tabs) {
      const on = t === tab;
      t.setAttribute("aria-selected", on ? "true" : "false");
      t.tabIndex = on ? 0 : -1;
      document.getElementById(t.getAttribute("aria-controls")).hidden = !on;
    }
    if (focus) tab.focus();
    history.replaceState(null, "", "#" + tab.id.replace(/^tab-/, ""));
  }
  tabs.forEach((tab) => {
    tab.addEventListener("click", () => select(tab, false));
    tab.addEventListener("keydown", (ev) => {
      const list = shown();
      const i = list.indexOf(tab);
      let j = null;
      if (ev.key === "ArrowRight") j = (i + 1) % list.length;
      else if (ev.key === "ArrowLeft") j = (i - 1 + list.length) % list.length;
      else if (ev.key === "Home") j = 0;
      else if (ev.key === "End") j = list.length - 1;
      if (j !== null) { ev.preventDefault(); select(list[j], true); }
    });
  });
  const wanted = document.getElementById("tab-" + location.hash.slice(1));
  if (wanted && !wanted.hidden) select(wanted, false);
  window.skinnysipSelectTab = (id) => select(document.getElementById(id), false);
}

// ------------------------------------------------------------------ forms → JSON bodies

// Inputs whose name starts with "_" steer the page (operation, scheme) and are not sent.
// Empty fields are left out so the API's defaults apply; numbers are sent as numbers.
function formBody(form) {
  const body = {};
  for (const input of form.querySelectorAll("input[name], select[name], textarea[name]")) {
    if (input.name.startsWith("_") || input.disabled || input.closest("[hidden]")) continue;
    if (input.type === "checkbox") { body[input.name] = input.checked; continue; }
    const value = input.value.trim();
    if (value === "" && !input.dataset.sendEmpty) continue;
    if (input.dataset.type === "headers") {  // "Event: check-sync" lines → [{name, value}]
      body[input.name] = value.split(/\r?\n/).filter((line) => line.trim() !== "").map((line) => {
        const colon = line.indexOf(":");
        return colon < 0 ? { name: line.trim(), value: "" }
          : { name: line.slice(0, colon).trim(), value: line.slice(colon + 1).trim() };
      });
    } else if (input.tagName === "TEXTAREA") {
      body[input.name] = input.value;  // a body as typed
    } else if (input.dataset.type === "list") {  // "PCMA, PCMU" → ["PCMA", "PCMU"]
      body[input.name] = value.split(",").map((item) => item.trim()).filter((item) => item !== "");
    } else if (input.type === "number" || input.dataset.type === "number") {
      const n = Number(value);
      body[input.name] = Number.isFinite(n) ? n : value;  // let the API name a bad number
    } else {
      body[input.name] = input.name === "password" ? input.value : value;
    }
  }
  return body;
}

function clearErrors(form) {
  for (const node of form.querySelectorAll(".field-error")) node.remove();
  for (const input of form.querySelectorAll("[aria-invalid]")) {
    input.removeAttribute("aria-invalid");
    const ids = (input.getAttribute("aria-describedby") || "").split(" ").filter((id) => !id.endsWith("-error"));
    if (ids.length) input.setAttribute("aria-describedby", ids.join(" "));
    else input.removeAttribute("aria-describedby");
  }
  const formError = form.querySelector(".form-error");
  formError.hidden = true;
  formError.textContent = "";
}

// The API answers 400 {"error": "<field>: <what is wrong>"} (several joined by "; "). Each part
// naming a field of this form is shown next to that field; the rest above the Run button.
function showErrors(form, error) {
  const parts = String(error).split(/;\s(?=[A-Za-z_][\w.\[\]]*:\s)/);
  const loose = [];
  let first = null;
  for (const part of parts) {
    const m = /^([A-Za-z_][\w.\[\]]*):\s([\s\S]*)$/.exec(part);
    const name = m ? m[1].split(".")[0] : null;
    const input = name ? Array.from(form.querySelectorAll(`[name="${CSS.escape(name)}"]`))
      .find((i) => !i.closest("[hidden]")) : null;
    if (!input) { loose.push(part); continue; }
    const id = `${input.id}-error`;
    let box = document.getElementById(id);
    if (!box) {
      box = el("span", { class: "field-error", id, "data-field": name });
      (input.closest("label") || input).after(box);
    }
    box.textContent = (box.textContent ? box.textContent + "; " : "") + m[2];
    input.setAttribute("aria-invalid", "true");
    const described = (input.getAttribute("aria-describedby") || "").split(" ").filter(Boolean);
    if (!described.includes(id)) input.setAttribute("aria-describedby", [...described, id].join(" "));
    first = first || input;
  }
  if (loose.length) {
    const formError = form.querySelector(".form-error");
    formError.textContent = loose.join("; ");
    formError.hidden = false;
  }
  if (first) first.focus();
}

async function callApi(url, body, timeoutMs) {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), timeoutMs);
  try {
    const resp = await fetch(url, {
      method: "POST",
      headers: authHeaders({ "Content-Type": "application/json" }),
      body: JSON.stringify(body),
      signal: ctl.signal,
    });
    if (resp.status === 401) needToken();
    let data;
    try { data = await resp.json(); } catch { data = { success: false, error: `HTTP ${resp.status}: not JSON` }; }
    return { status: resp.status, data };
  } finally {
    clearTimeout(timer);
  }
}

// Runs a tester form: POST its body, then render the result or place the errors.
function setupTester(form, { url, render, wait }) {
  const kind = form.dataset.kind;
  const status = document.getElementById(`${kind}-status`);
  const button = document.getElementById(`${kind}-run`);
  const resultBox = document.getElementById(`${kind}-result`);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearErrors(form);
    const body = formBody(form);
    const target = url(form);
    button.disabled = true;
    form.setAttribute("aria-busy", "true");
    status.textContent = `Running ${target} …`;
    const started = performance.now();
    try {
      const { status: code, data } = await callApi(target, body, wait(body));
      const took = Math.round(performance.now() - started);
      if (code === 400 || code === 422) {
        status.textContent = `Refused (HTTP ${code})`;
        showErrors(form, data.error || "invalid request");
        return;
      }
      if (code === 401 || code === 403 || code === 429) {  // the server's guard, not a result
        status.textContent = `Refused (HTTP ${code})`;
        showErrors(form, code === 401 ? TOKEN_NEEDED : data.error || `HTTP ${code}`);
        return;
      }
      status.textContent = `HTTP ${code} in ${took} ms — ${data.success ? "success" : "failed"}`;
      render(resultBox, data, body, target);
      resultBox.hidden = false;
    } catch (err) {
      status.textContent = "";
      showErrors(form, err.name === "AbortError" ? "the server did not answer in time" : `request failed: ${err.message}`);
    } finally {
      button.disabled = false;
      form.removeAttribute("aria-busy");
    }
  });
}

// ------------------------------------------------------------------ result rendering

const SKIP_FIELDS = new Set(["exchange", "headers", "raw", "tls"]);

function fmt(value) {
  if (value === null || value === undefined) return "—";
  if (Array.isArray(value)) return value.length ? value.map(fmt).join(", ") : "—";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

// A key/value table of a result's scalar and scalar-list fields; each row carries data-key.
function fieldsTable(obj, caption) {
  const tbody = el("tbody");
  for (const [key, value] of Object.entries(obj)) {
    if (SKIP_FIELDS.has(key)) continue;
    if (Array.isArray(value) && value.some((v) => v && typeof v === "object")) continue;
    if (value && typeof value === "object" && !Array.isArray(value)) continue;
    const cls = value === true ? "yes" : value === false ? "no" : null;
    tbody.append(el("tr", { "data-key": key }, el("th", { scope: "row", text: key }), el("td", { class: cls, text: fmt(value) })));
  }
  return el("table", { class: "fields" }, el("caption", { text: caption }), tbody);
}

// A table of a list of objects (headers, lines, soft keys …).
function listTable(rows, caption, cls) {
  const cols = [];
  for (const r of rows) for (const k of Object.keys(r)) if (!cols.includes(k)) cols.push(k);
  const thead = el("thead", {}, el("tr", {}, ...cols.map((c) => el("th", { scope: "col", text: c }))));
  const tbody = el("tbody", {}, ...rows.map((r) => el("tr", {}, ...cols.map((c) => el("td", { text: fmt(r[c]) })))));
  return el("div", { class: "table-wrap" }, el("table", { class: `list ${cls || ""}` }, el("caption", { text: caption }), thead, tbody));
}

function section(title, ...content) {
  return el("section", { class: "block" }, el("h3", { text: title }), ...content);
}

function tlsBlock(tls) {
  if (!tls) return null;
  const t = fieldsTable(tls, "TLS handshake and server certificate");
  t.classList.add("tls");
  return section("TLS certificate", t);
}

function headline(data, what) {
  const ok = data.success;
  const text = ok ? `${what}: success` : `${what}: failed${data.error ? " — " + data.error : ""}`;
  return el("p", { class: `headline ${ok ? "ok" : "bad"}`, role: "status", text });
}

function renderSip(box, data, body, target) {
  box.replaceChildren();
  const status = data.statusCode ? ` — ${data.statusCode} ${data.statusText || ""}` : "";
  box.append(headline(data, `${target}${status}`));
  box.append(section("Result", fieldsTable(data, "Result fields")));
  if (data.hops && data.hops.length) box.append(section("Hops", listTable(data.hops, "One OPTIONS a step, Max-Forwards 0, 1, 2…: who answered", "hops")));
  if (data.headers && data.headers.length) box.append(section("Response header fields", listTable(data.headers, "Header fields of the final response", "headers")));
  const tls = tlsBlock(data.tls);
  if (tls) box.append(tls);
  if (data.raw) box.append(section("Raw response", el("pre", { class: "raw", tabindex: "0", text: data.raw })));
  box.append(ladderBlock(data, "sip"));
  box.append(jsonBlock(data));
}

function renderSccp(box, data, body, target) {
  box.replaceChildren();
  box.append(headline(data, `${target} — ${data.status || ""}`));
  box.append(section("Result", fieldsTable(data, "Result fields")));
  if (data.call) {
    const call = data.call;
    const states = el("ol", { class: "states", "aria-label": "Call states in order" },
      ...(call.states || []).map((s) => el("li", { text: s })));
    const rtp = el("p", { class: "rtp" },
      el("span", { "data-key": "rtpPacketsSent", text: `RTP sent ${call.rtpPacketsSent}` }), " · ",
      el("span", { "data-key": "rtpPacketsReceived", text: `received ${call.rtpPacketsReceived}` }), " · ",
      el("span", { text: `lost ${call.rtpPacketsLost}` }), " · ",
      el("span", { text: `jitter ${call.rtpJitterMs} ms` }));
    box.append(section("Call", states, rtp, fieldsTable(call, "Call fields")));
  }
  if (data.messages && data.messages.length) {
    box.append(section("Messages", el("ol", { class: "messages" }, ...data.messages.map((m) => el("li", { text: m })))));
  }
  for (const [key, title] of [["lines", "Lines"], ["speedDials", "Speed dials"], ["softKeys", "Soft keys"]]) {
    if (data[key] && data[key].length) box.append(section(title, listTable(data[key], title, key)));
  }
  const tls = tlsBlock(data.tls);
  if (tls) box.append(tls);
  box.append(ladderBlock(data, "sccp"));
  box.append(jsonBlock(data));
}

function jsonBlock(data) {
  return el("details", { class: "json" }, el("summary", { text: "Result as JSON" }),
    el("pre", { tabindex: "0", text: JSON.stringify(data, null, 2) }));
}

// ------------------------------------------------------------------ ladder diagram

// One line about a SIP message's SDP body: "SDP audio 192.0.2.1:4000 PCMU,PCMA sendrecv".
function sdpSummary(raw) {
  const split = raw.search(/\r?\n\r?\n/);
  if (split < 0) return "";
  const head = raw.slice(0, split);
  if (!/^(content-type|c)\s*:\s*application\/sdp/im.test(head)) return "";
  const sdp = raw.slice(split).trim();
  let conn = "";
  const media = [];
  for (const line of sdp.split(/\r?\n/)) {
    if (line.startsWith("c=") && !conn) conn = line.split(" ").pop();
    else if (line.startsWith("m=")) media.push({ m: line.slice(2).split(" "), rtpmap: {}, dir: "" });
    else if (line.startsWith("a=rtpmap:") && media.length) {
      const [pt, enc] = line.slice(9).split(" ");
      media[media.length - 1].rtpmap[pt] = (enc || "").split("/")[0];
    } else if (/^a=(sendrecv|sendonly|recvonly|inactive)$/.test(line) && media.length) {
      media[media.length - 1].dir = line.slice(2);
    }
  }
  const parts = media.map(({ m, rtpmap, dir }) => {
    const codecs = m.slice(3).map((pt) => rtpmap[pt] || ({ 0: "PCMU", 8: "PCMA", 9: "G722", 18: "G729" })[pt] || pt);
    return `${m[0]} ${conn}:${m[1]} ${codecs.join(",")}${dir ? " " + dir : ""}`;
  });
  return parts.length ? "SDP " + parts.join("; ") : "SDP";
}

const SCCP_CALL_STATES = {
  1: "OffHook", 2: "OnHook", 3: "RingOut", 4: "RingIn", 5: "Connected", 6: "Busy", 7: "Congestion",
  8: "Hold", 9: "CallWaiting", 10: "CallTransfer", 11: "CallPark", 12: "Proceed", 13: "CallRemoteMultiline",
  14: "InvalidNumber",
};

// One line of the SCCP fields that matter on a ladder (state, digits, media addresses).
function sccpDetail(msg) {
  const f = (msg.decoded && msg.decoded.fields) || {};
  switch (msg.summary) {
    case "CallState": return SCCP_CALL_STATES[f.callState] || `state ${f.callState}`;
    case "KeypadButton": return `digit ${f.kpButton === 14 ? "*" : f.kpButton === 15 ? "#" : f.kpButton}`;
    case "DialedNumber": return f.dialedNumber || "";
    case "CallInfo": return `${f.callingParty || "?"} → ${f.calledParty || "?"}`;
    case "OpenReceiveChannelAck": return `RTP in ${f.ipAddr}:${f.portNumber}`;
    case "StartMediaTransmission": return `RTP out → ${f.remoteIpAddr}:${f.remotePortNumber}`;
    case "Register": return `${f.deviceName} type ${f.deviceType}`;
    case "RegisterAck": return `keepalive ${f.keepAliveInterval} s`;
    case "RegisterReject": return f.text || "";
    default: return "";
  }
}

function messageDetail(msg, kind) {
  return kind === "sccp" || msg.decoded ? sccpDetail(msg) : sdpSummary(msg.raw || "");
}

function clock(t) {
  const d = new Date(t * 1000);
  const p = (n, w) => String(n).padStart(w, "0");
  return `${p(d.getHours(), 2)}:${p(d.getMinutes(), 2)}:${p(d.getSeconds(), 2)}.${p(d.getMilliseconds(), 3)}`;
}

function ladderModel(exchange, kind) {
  const columns = [];
  const col = (ep) => { if (!columns.includes(ep)) columns.push(ep); return columns.indexOf(ep); };
  const t0 = exchange.length ? exchange[0].time : 0;
  const rows = exchange.map((m, i) => {
    const src = m.direction === "sent" ? m.local : m.remote;
    const dst = m.direction === "sent" ? m.remote : m.local;
    return {
      index: i, msg: m, from: col(src), to: col(dst), src, dst,
      rel: (m.time - t0) * 1000, delta: i ? (m.time - exchange[i - 1].time) * 1000 : 0,
      label: m.summary, detail: messageDetail(m, kind),
    };
  });
  return { columns, rows, t0 };
}

// Colours are presentation attributes (not CSS) so an exported SVG looks the same on its own.
function ladderSvg(model) {
  const left = 190, colW = 300, top = 54, rowH = 46;
  const width = left + Math.max(model.columns.length - 1, 1) * colW + 140;
  const band = model.rtp ? rowH : 0;
  const height = top + model.rows.length * rowH + 20 + band;
  const root = svg("svg", {
    xmlns: SVG_NS, viewBox: `0 0 ${width} ${height}`, width, height, class: "ladder-svg",
    role: "group", "aria-label": `Ladder diagram: ${model.rows.length} messages between ${model.columns.join(", ")}`,
    "font-family": "ui-monospace, Menlo, Consolas, monospace", "font-size": "12",
  });
  const defs = svg("defs");
  for (const [id, colour] of [["arrow-sent", "#0b6bcb"], ["arrow-received", "#a02c8a"]]) {
    const marker = svg("marker", { id, viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 8, markerHeight: 8, orient: "auto-start-reverse" });
    marker.append(svg("path", { d: "M0,0 L10,5 L0,10 z", fill: colour }));
    defs.append(marker);
  }
  root.append(defs, svg("rect", { x: 0, y: 0, width, height, fill: "#ffffff" }));
  const x = (c) => left + 70 + c * colW;
  root.append(svg("text", { x: 8, y: 20, fill: "#555", "font-weight": "bold" }, "time"));
  root.append(svg("text", { x: 8, y: 36, fill: "#555" }, "(+delta ms)"));
  model.columns.forEach((ep, c) => {
    root.append(svg("text", { x: x(c), y: 24, "text-anchor": "middle", "font-weight": "bold", fill: "#222", class: "column" }, ep));
    root.append(svg("line", { x1: x(c), y1: 34, x2: x(c), y2: height - 8, stroke: "#999", "stroke-dasharray": "4 4" }));
  });
  for (const r of model.rows) {
    const y = top + r.index * rowH + 22;
    const sent = r.msg.direction === "sent";
    const colour = sent ? "#0b6bcb" : "#a02c8a";
    const g = svg("g", {
      class: "msg", tabindex: 0, role: "button", "data-index": r.index, cursor: "pointer",
      "aria-label": `${r.index + 1}: ${r.label} from ${r.src} to ${r.dst} at +${r.rel.toFixed(1)} ms; show raw message`,
    });
    g.append(svg("title", {}, `${r.src} → ${r.dst} (${r.msg.transport})\n${r.label}${r.detail ? "\n" + r.detail : ""}`));
    g.append(svg("rect", { x: 0, y: y - 22, width, height: rowH, fill: "transparent", class: "hit" }));
    g.append(svg("text", { x: 8, y: y - 4, fill: "#333" }, clock(r.msg.time)));
    g.append(svg("text", { x: 8, y: y + 12, fill: "#777" }, `+${r.rel.toFixed(1)} (+${r.delta.toFixed(1)})`));
    const x1 = x(r.from), x2 = x(r.to);
    g.append(svg("line", { x1, y1: y, x2, y2: y, stroke: colour, "stroke-width": 2, "marker-end": `url(#arrow-${sent ? "sent" : "received"})` }));
    const mid = (x1 + x2) / 2;
    g.append(svg("text", { x: mid, y: y - 6, "text-anchor": "middle", fill: colour, "font-weight": "bold", class: "label" },
      `${r.label} (${r.msg.transport})`));
    if (r.detail) g.append(svg("text", { x: mid, y: y + 15, "text-anchor": "middle", fill: "#444", class: "detail" }, r.detail));
    root.append(g);
  }
  if (model.rtp) {
    // the call's RTP as a band under its signalling, with the packet counts of its media report
    const y = top + model.rows.length * rowH + 6;
    const r = model.rtp;
    root.append(svg("rect", { x: 4, y, width: width - 8, height: rowH - 10, rx: 6, fill: "#e9f6ec", stroke: "#1a7f37", class: "rtp-band" }));
    root.append(svg("text", { x: width / 2, y: y + (rowH - 10) / 2 + 4, "text-anchor": "middle", fill: "#14532d", "font-weight": "bold", class: "rtp-label" },
      rtpLabel(r)));
  }
  return root;
}

function rtpLabel(r) {
  return `RTP ${r.codec || ""} ${r.local} ⇄ ${r.remote}: sent ${r.sent}, received ${r.received} packets`;
}

// The RTP band of a call's ladder from its media report (camelCase, as the phone API gives it).
function rtpBand(media) {
  if (!media || !media.local) return null;
  const hp = (a) => (a ? (String(a[0]).includes(":") ? `[${a[0]}]:${a[1]}` : `${a[0]}:${a[1]}`) : "?");
  return { codec: media.codec, local: hp(media.local), remote: hp(media.remote),
    sent: (media.sent || {}).packets || 0, received: (media.received || {}).packets || 0 };
}

function ladderText(model) {
  const lines = [];
  const start = model.rows.length ? new Date(model.t0 * 1000).toISOString() : "-";
  lines.push(`# ${model.rows.length} messages, first at ${start}`);
  lines.push(`# columns: ${model.columns.join("  |  ")}`);
  if (model.rtp) lines.push(`# RTP ${model.rtp.codec || ""} ${model.rtp.local} <-> ${model.rtp.remote}: sent ${model.rtp.sent}, received ${model.rtp.received} packets`);
  for (const r of model.rows) {
    const arrow = r.from < r.to ? "-->" : "<--";
    const [a, b] = r.from < r.to ? [r.src, r.dst] : [r.dst, r.src];
    lines.push(`${clock(r.msg.time)}  +${r.rel.toFixed(1).padStart(9)} ms  (+${r.delta.toFixed(1).padStart(8)})  `
      + `${a.padEnd(22)} ${arrow} ${b.padEnd(22)} ${r.msg.transport.padEnd(4)} ${r.label}${r.detail ? "  [" + r.detail + "]" : ""}`);
  }
  return lines.join("\n") + "\n";
}

function ladderBlock(data, kind, media) {
  const exchange = data.exchange || [];
  const block = el("section", { class: "block ladder" }, el("h3", { text: `Ladder (${exchange.length} messages)` }));
  if (!exchange.length) {
    block.append(el("p", { class: "hint", text: "Nothing crossed the wire." }));
    return block;
  }
  const model = ladderModel(exchange, kind);
  model.rtp = rtpBand(media);
  const picture = ladderSvg(model);
  const detail = el("div", { class: "message-detail", "aria-live": "polite" },
    el("p", { class: "hint", text: "Click (or focus and press Enter on) a message to see it raw." }));
  function show(index) {
    const m = exchange[index];
    for (const g of picture.querySelectorAll("g.msg")) g.classList.toggle("selected", Number(g.dataset.index) === index);
    const head = `${index + 1}. ${m.direction} ${m.transport} ${m.local} ${m.direction === "sent" ? "→" : "←"} ${m.remote} at ${clock(m.time)}`;
    const parts = [el("h4", { text: head }), el("pre", { class: "raw", tabindex: "0", "data-index": index, text: m.raw })];
    if (m.decoded) parts.push(el("pre", { class: "decoded", tabindex: "0", text: JSON.stringify(m.decoded, null, 2) }));
    detail.replaceChildren(...parts);
  }
  picture.addEventListener("click", (ev) => {
    const g = ev.target.closest("g.msg");
    if (g) show(Number(g.dataset.index));
  });
  picture.addEventListener("keydown", (ev) => {
    const g = ev.target.closest("g.msg");
    if (g && (ev.key === "Enter" || ev.key === " ")) { ev.preventDefault(); show(Number(g.dataset.index)); }
  });
  const name = `skinnysip-${kind}-${stamp()}`;
  const pcapStatus = el("span", { class: "status", role: "status", "aria-live": "polite" });
  const tools = el("div", { class: "actions" },
    el("button", { type: "button", class: "export-svg", onclick: () => {
      const text = '<?xml version="1.0" encoding="UTF-8"?>\n' + new XMLSerializer().serializeToString(picture);
      download(new Blob([text], { type: "image/svg+xml" }), `${name}.svg`);
    } }, "Export ladder as SVG"),
    el("button", { type: "button", class: "export-text", onclick: () => {
      download(new Blob([ladderText(model)], { type: "text/plain" }), `${name}.txt`);
    } }, "Export ladder as text"),
    el("button", { type: "button", class: "download-pcap", onclick: async (ev) => {
      const button = ev.currentTarget;
      button.disabled = true;
      pcapStatus.textContent = "Writing pcapng …";
      try {
        const resp = await fetch("/api/pcap", {
          method: "POST", headers: authHeaders({ "Content-Type": "application/json" }),
          body: JSON.stringify({ exchange, filename: `${name}.pcapng` }),
        });
        if (!resp.ok) {
          let err = `HTTP ${resp.status}`;
          try { err = (await resp.json()).error || err; } catch { /* keep the status */ }
          pcapStatus.textContent = `pcap failed: ${err}`;
          return;
        }
        download(await resp.blob(), `${name}.pcapng`);
        pcapStatus.textContent = "pcapng downloaded";
      } catch (e) {
        pcapStatus.textContent = `pcap failed: ${e.message}`;
      } finally {
        button.disabled = false;
      }
    } }, "Download pcapng"),
    pcapStatus);
  block.append(tools, el("div", { class: "ladder-wrap", tabindex: "-1" }, picture), detail);
  return block;
}

// ------------------------------------------------------------------ the two testers

function setupSip() {
  const form = document.getElementById("sip-form");
  const scheme = document.getElementById("sip-scheme");
  const op = document.getElementById("sip-operation");
  const transport = document.getElementById("sip-transport");
  const port = document.getElementById("sip-port");
  function sync() {
    const sips = scheme.value === "sips";
    transport.disabled = sips;
    if (sips) transport.value = "tls";
    const ws = ["ws", "wss"].includes(transport.value);
    port.placeholder = sips || transport.value === "tls" ? "5061"
      : transport.value === "ws" ? "80" : transport.value === "wss" ? "443" : "5060 (or DNS SRV)";
    for (const n of form.querySelectorAll(".ws-only")) n.hidden = !ws;
    // digest-auth and usrloc register with credentials, for expires seconds
    const login = ["digest-auth", "usrloc"].includes(op.value);
    for (const n of form.querySelectorAll(".digest-only")) n.hidden = op.value !== "digest-auth";
    for (const n of form.querySelectorAll(".expires-field")) n.hidden = !login;
    for (const n of form.querySelectorAll(".trace-only")) n.hidden = op.value !== "traceroute";
    for (const n of form.querySelectorAll(".request-only")) n.hidden = op.value !== "request";
    for (const n of form.querySelectorAll(".usrloc-only")) n.hidden = op.value !== "usrloc";
    document.getElementById("sip-method").required = op.value === "request";
    document.getElementById("sip-username").required = login;
    // a login requires a password, and an empty one is a valid password to try
    document.getElementById("sip-password").dataset.sendEmpty = login ? "1" : "";
  }
  scheme.addEventListener("change", sync);
  op.addEventListener("change", sync);
  transport.addEventListener("change", sync);
  sync();
  setupTester(form, {
    url: () => `/api/${scheme.value}/${op.value}`,
    render: renderSip,
    // digest-auth may wait for two final responses plus the un-REGISTER (and its checks)
    wait: (body) => (body.timeout || (scheme.value === "sips" ? 15000 : 10000))
      * (3 + (body.digestChecks ? 2 : 0) + (body.enumerationCheck ? 4 : 0)
         + (op.value === "traceroute" ? (body.maxHops || 20) : 0)) + 5000,
  });
}

function setupSccp() {
  const form = document.getElementById("sccp-form");
  const op = document.getElementById("sccp-operation");
  const tls = document.getElementById("sccp-tls");
  const port = document.getElementById("sccp-port");
  const name = document.getElementById("sccp-device-name");
  function sync() {
    for (const n of form.querySelectorAll(".call-only")) n.hidden = op.value !== "call-setup";
    document.getElementById("sccp-dial-number").required = op.value === "call-setup";
    port.placeholder = tls.checked ? "2443" : "2000";
  }
  op.addEventListener("change", sync);
  tls.addEventListener("change", sync);
  name.addEventListener("input", () => {
    name.setAttribute("aria-invalid", name.validity.patternMismatch ? "true" : "false");
  });
  sync();
  setupTester(form, {
    url: () => `/api/sccp/${op.value}`,
    render: renderSccp,
    wait: (body) => (body.timeout || 10000) * 4 + (body.holdMs || 0) + 5000,
  });
}

document.addEventListener("DOMContentLoaded", () => {
  setupToken();
  setupTabs();
  setupSip();
  setupSccp();
});
