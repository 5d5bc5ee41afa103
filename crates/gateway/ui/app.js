// The fleet's page: reads /ui/api/* (the key as a header, never a cookie), draws the
// models, charts (uPlot), alerts, saved states, a model's live log, and a playground
// that streams through the front door's /v1/chat/completions. No framework: a few
// small render functions that rebuild their part from each answer.
"use strict";

const KEY_ITEM = "vllm-mcp-door-key";
const $ = (id) => document.getElementById(id);
const state = { fleet: null, range: "5m", charts: new Map(), logAbort: null, logModel: "" };

// ---- talking to the door -------------------------------------------------------------

function headers(json) {
  const h = {};
  const key = sessionStorage.getItem(KEY_ITEM);
  if (key) h["Authorization"] = "Bearer " + key;
  if (json) h["Content-Type"] = "application/json";
  return h;
}

async function api(path, body) {
  const init = body === undefined
    ? { headers: headers(false) }
    : { method: "POST", headers: headers(true), body: JSON.stringify(body) };
  const r = await fetch(path, init);
  if (r.status === 401) { $("keybox").hidden = false; throw new Error("the front door needs its key"); }
  const v = await r.json().catch(() => ({ success: false, error: { message: "HTTP " + r.status } }));
  if (!v.success) {
    const e = v.error || {};
    throw new Error((e.code ? e.code + ": " : "") + (e.message || "HTTP " + r.status));
  }
  return v;
}

function problem(e) {
  const p = $("problem");
  p.hidden = !e;
  p.textContent = e ? String(e.message || e) : "";
}

// ---- small helpers -------------------------------------------------------------------

function el(tag, attrs, ...kids) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") n.className = v; else if (k.startsWith("on")) n.addEventListener(k.slice(2), v);
    else n.setAttribute(k, v === true ? "" : v);
  }
  for (const k of kids.flat()) if (k !== null && k !== undefined) n.append(k.nodeType ? k : String(k));
  return n;
}

const mb = (v) => v == null ? null : v >= 1024 ? (v / 1024).toFixed(1) + " GiB" : v + " MiB";
function ago(unix, now) {
  if (unix == null) return "never";
  const s = Math.max(0, now - unix);
  return s < 60 ? Math.round(s) + " s ago" : s < 3600 ? Math.round(s / 60) + " min ago" : (s / 3600).toFixed(1) + " h ago";
}
function secs(s) { return s == null ? "—" : s < 90 ? Math.round(s) + " s" : Math.round(s / 60) + " min"; }
const when = (rfc) => rfc ? Date.parse(rfc) / 1000 : null;

function confirmed(text) {
  const d = $("confirm");
  $("confirm-text").textContent = text;
  d.returnValue = "";
  d.showModal();
  return new Promise((ok) => d.addEventListener("close", () => ok(d.returnValue === "ok"), { once: true }));
}

// ---- models ---------------------------------------------------------------------------

// The actions a status offers, in order; `ask` ones need a confirmation.
const OFFERS = {
  unloaded: ["load"], error: ["load"], loaded: ["sleep", "unload"],
  sleeping: ["wake", "unload"], loading: ["unload"], stopping: [],
};
const ASK = { unload: "Unload %s? Its server is stopped and requests in flight are waited for.",
              sleep: "Put %s to sleep? Its weights leave the accelerator until it is woken." };

async function act(model, action) {
  if (ASK[action] && !(await confirmed(ASK[action].replace("%s", model)))) return;
  try { await api(`/ui/api/models/${encodeURIComponent(model)}/${action}`, {}); problem(null); }
  catch (e) { problem(e); }
  refreshFleet();
}

function statusCell(m, now) {
  const td = el("td", {}, el("span", { class: "status " + m.status }, m.status));
  if (m.status === "loading" && m.loading_seconds != null) td.append(" " + Math.round(m.loading_seconds) + " s");
  if (m.starting && m.status !== "loading") td.append(el("small", {}, m.status === "sleeping" ? "waking…" : "the door's start is finishing"));
  if (m.progress) td.append(el("small", { title: m.progress }, m.progress));
  if (m.reason) td.append(el("small", { class: "reason", title: m.error || "" }, m.reason + (m.error ? ": " + m.error : "")));
  return td;
}

function memoryCell(m) {
  const parts = [];
  if (m.weights_mb != null) parts.push("weights " + mb(m.weights_mb));
  if (m.kv_cache_mb != null) parts.push("KV " + mb(m.kv_cache_mb));
  if (m.kv_cache_usage != null) parts.push(Math.round(m.kv_cache_usage * 100) + "% used");
  if (!parts.length && m.estimate_mb != null) parts.push("≈ " + mb(m.estimate_mb) + " (estimate)");
  return el("td", {}, parts.join(" · ") || "—");
}

function controlsCell(m, fleet) {
  const td = el("td", { class: "controls" });
  const offers = (OFFERS[m.status] || []).slice();
  if (m.origin !== "adapter" && m.status !== "unloaded" && m.status !== "error") offers.push(m.pinned ? "unpin" : "pin");
  for (const a of offers) {
    if (!fleet.actions[a + "-model"]) continue;
    td.append(el("button", { type: "button", class: ASK[a] ? "danger" : "", "data-action": a, onclick: () => act(m.id, a) }, a));
  }
  return td;
}

function renderModels(fleet) {
  const body = $("models").tBodies[0];
  const rows = fleet.models.map((m) => el("tr", { "data-model": m.id, "data-status": m.status },
    el("td", {}, el("b", {}, m.id), el("small", {}, m.origin + (m.parent ? " of " + m.parent : ""))),
    statusCell(m, fleet.now),
    el("td", {}, m.node || "—", m.url ? el("small", {}, m.url) : null),
    memoryCell(m),
    el("td", {}, `${m.in_flight} in flight · ${m.waiting} queued`,
       m.running != null ? el("small", {}, `vLLM: ${m.running} running, ${m.queued ?? 0} waiting`) : null),
    el("td", {}, ago(when(m.last_used), fleet.now)),
    el("td", {}, secs(m.ttl_left_seconds)),
    el("td", {}, m.pinned ? "📌 yes" : "no"),
    fleet.controls ? controlsCell(m, fleet) : null));
  body.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 9, class: "muted" }, "No models: add a [catalog] entry or load one."))]));
  for (const th of document.querySelectorAll("th.controls")) th.hidden = !fleet.controls;
}

function fillSelect(sel, ids, keep) {
  const current = sel.value || keep;
  sel.replaceChildren(...ids.map((id) => el("option", { value: id }, id)));
  if (ids.includes(current)) sel.value = current;
}

async function refreshFleet() {
  try {
    const f = await api("/ui/api/fleet");
    state.fleet = f;
    $("keybox").hidden = true;
    $("door").textContent = (f.url || location.origin) + " · vllm-mcp " + f.version;
    $("tier").textContent = f.controls ? "controls: " + f.max_tier : "read only";
    $("fresh").textContent = f.last_sample_at ? "monitor sampled " + ago(f.last_sample_at, f.now) : "no monitor samples yet";
    renderModels(f);
    fillSelect($("log-model"), f.models.filter((m) => m.origin === "launched").map((m) => m.id), state.logModel);
    fillSelect($("play-model"), f.models.map((m) => m.id));
    if ($("log-model").value !== state.logModel) followLog($("log-model").value);
    problem(null);
  } catch (e) { problem(e); }
}

// ---- charts ---------------------------------------------------------------------------

const COLORS = ["#0969da", "#1a7f37", "#cf222e", "#8250df", "#bf8700", "#1b7c83", "#d1242f", "#6e7781"];

// Each chart: a title, a unit, and its lines from the answer.
const CHARTS = [
  ["tokens", "Generated tokens / s", "", (c) => c.models.map((m) => [m.model, m.tokens_per_second])],
  ["requests", "Requests / s", "", (c) => c.models.map((m) => [m.model, m.requests_per_second])],
  ["latency", "Latency p50 / p95 (ms)", "ms", (c) => c.models.flatMap((m) => [[m.model + " p50", m.latency_p50_ms], [m.model + " p95", m.latency_p95_ms]])],
  ["ttft", "Time to first token p50 / p95 (ms)", "ms", (c) => c.models.flatMap((m) => [[m.model + " p50", m.ttft_p50_ms], [m.model + " p95", m.ttft_p95_ms]])],
  ["kv", "KV-cache usage (%)", "%", (c) => c.models.map((m) => [m.model, m.kv_cache_usage.map((v) => v == null ? null : v * 100)])],
  ["gpu-memory", "GPU memory used (MiB)", "MiB", (c) => c.gpus.map((g) => ["GPU " + g.gpu, g.memory_used_mb])],
  ["gpu-util", "GPU utilization (%)", "%", (c) => c.gpus.map((g) => ["GPU " + g.gpu, g.utilization.map((v) => v == null ? null : v * 100)])],
  ["gpu-temp", "GPU temperature (°C)", "°C", (c) => c.gpus.map((g) => ["GPU " + g.gpu, g.temperature_c])],
];

function drawChart(name, title, t, lines, sparse) {
  let box = state.charts.get(name);
  if (!box) {
    box = { div: el("div", { class: "chart", "data-chart": name }, el("h3", {}, title)), plot: null, key: "" };
    $("charts").append(box.div);
    state.charts.set(name, box);
  }
  const points = lines.reduce((n, [, ys]) => n + ys.filter((v) => v != null).length, 0);
  box.div.dataset.points = points;
  const key = lines.map(([label]) => label).join("|");
  if (!lines.length) {
    if (box.plot) { box.plot.destroy(); box.plot = null; }
    box.key = "";
    if (!box.div.querySelector(".empty")) box.div.append(el("div", { class: "empty" }, "no data in this range"));
    return;
  }
  box.div.querySelector(".empty")?.remove();
  const data = [t, ...lines.map(([, ys]) => ys)];
  if (box.plot && box.key === key) { box.plot.setData(data); return; }
  // A chart whose lines changed (a model came or went) is drawn anew.
  if (box.plot) box.plot.destroy();
  const width = Math.max(300, box.div.clientWidth - 4);
  box.plot = new uPlot({
    width, height: 180, cursor: { drag: { x: false, y: false } },
    scales: { x: { time: true } },
    // Latency has points only where requests finished: each is drawn, not only lines.
    series: [{}, ...lines.map(([label], i) => ({ label, stroke: COLORS[i % COLORS.length], width: 1.5,
                                                spanGaps: false, points: sparse ? { show: true, size: 5 } : { size: 4 } }))],
    axes: [{}, { size: 60 }],
  }, data, box.div);
  box.key = key;
}

async function refreshCharts() {
  try {
    const range = state.range;
    const v = await api("/ui/api/charts?range=" + range);
    if (range !== state.range) return; // another range was chosen meanwhile
    const c = v.charts;
    $("charts-note").textContent = `${c.t.length} points of ${Math.round(c.step)} s from the monitor's stored history` +
      (c.models.length ? "" : " · no model samples in this range (is a monitor sampling?)");
    for (const [name, title, unit, pick] of CHARTS) drawChart(name, title, c.t, pick(c), unit === "ms");
  } catch (e) { problem(e); }
}

// ---- alerts and saved states -------------------------------------------------------------

function alertLine(a) {
  const target = Object.entries(a.target || {}).map(([k, v]) => k + "=" + v).join(" ");
  return el("div", { class: "alert " + a.severity, "data-state": a.state },
    el("b", {}, a.state + " · " + a.rule), " ", target, el("small", {}, a.summary + " · since " + a.since));
}

async function refreshAlerts() {
  try {
    const v = await api("/ui/api/alerts");
    const act = [...v.active.alerts, ...v.active.pending];
    const hist = v.history.alerts.slice(0, 10);
    $("alerts").replaceChildren(
      ...(act.length ? act.map(alertLine) : [el("p", { class: "muted" }, "Nothing firing or pending.")]),
      el("h3", {}, "Recently resolved"),
      ...(hist.length ? hist.map(alertLine) : [el("p", { class: "muted" }, "None.")]));
  } catch (e) { problem(e); }
}

async function restore(s) {
  if (!(await confirmed(`Restore the models of state ${s.state_id} (${s.models.join(", ") || "none"})?`))) return;
  try { await api(`/ui/api/states/${encodeURIComponent(s.state_id)}/restore`, {}); problem(null); }
  catch (e) { problem(e); }
  refreshFleet();
}

async function refreshStates() {
  try {
    const v = await api("/ui/api/states");
    const can = state.fleet && state.fleet.actions["load-state"];
    const rows = v.states.map((s) => el("tr", { "data-state": s.state_id },
      el("td", {}, s.timestamp, el("small", {}, s.state_id)),
      el("td", {}, s.title || s.session_id),
      el("td", {}, s.models.join(", ") || "—"),
      can && s.has_models ? el("td", { class: "controls" }, el("button", { type: "button", "data-action": "restore", onclick: () => restore(s) }, "restore")) : el("td")));
    $("states").tBodies[0].replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 4, class: "muted" }, "No saved states (save-state makes one)."))]));
  } catch (e) { problem(e); }
}

// ---- server-sent events over fetch (the key is a header) -----------------------------

async function readEvents(response, onEvent, signal) {
  const reader = response.body.getReader();
  const dec = new TextDecoder();
  let buf = "";
  try {
    while (!signal || !signal.aborted) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        let event = "message", data = "";
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) event = line.slice(6).trim();
          else if (line.startsWith("data:")) data += line.slice(5).trimStart();
        }
        if (data) onEvent(event, data);
      }
    }
  } finally {
    // A handler that threw, or an abort: the rest of the stream is not wanted.
    reader.cancel().catch(() => {});
  }
}

const LOG_KEEP = 2000; // lines

async function followLog(model) {
  if (state.logAbort) state.logAbort.abort();
  state.logModel = model;
  const pre = $("log");
  const kept = [];
  const show = (lines) => {
    const stick = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    kept.push(...lines);
    if (kept.length > LOG_KEEP) kept.splice(0, kept.length - LOG_KEEP);
    pre.textContent = kept.join("\n") + "\n";
    if (stick) pre.scrollTop = pre.scrollHeight;
  };
  pre.textContent = "";
  if (!model) return;
  const ctl = new AbortController();
  state.logAbort = ctl;
  try {
    const r = await fetch(`/ui/api/models/${encodeURIComponent(model)}/logs?lines=200`, { headers: headers(false), signal: ctl.signal });
    if (!r.ok) { pre.textContent = "log unavailable: HTTP " + r.status; }
    else {
      await readEvents(r, (event, data) => {
        const v = JSON.parse(data);
        if (event === "lines" && v.lines.length) show(v.lines);
        if (event === "status") show([`—— ${model} is ${v.status} ——`]);
      }, ctl.signal);
      if (!ctl.signal.aborted) show(["—— the log stream ended; following again shortly ——"]);
    }
  } catch (e) {
    if (e.name === "AbortError") return;
    show(["—— log stream ended: " + e.message + " ——"]);
  }
  // Ended by the door (a restart) rather than by the page: the next refresh follows again.
  if (state.logAbort === ctl && !ctl.signal.aborted) state.logModel = "";
}

// ---- playground -----------------------------------------------------------------------------

async function play(ev) {
  ev.preventDefault();
  const model = $("play-model").value, prompt = $("prompt").value.trim();
  if (!model || !prompt) return;
  const out = $("answer"), stats = $("play-stats"), send = $("send");
  out.textContent = ""; stats.textContent = "waiting for the first token…"; send.disabled = true;
  const t0 = performance.now();
  let first = null, last = null, chunks = 0, usage = null;
  // Decoding speed: the tokens after the first, over the time since the first.
  const rate = (n) => first !== null && last > first && n > 1 ? ((n - 1) / ((last - first) / 1000)).toFixed(1) : "—";
  try {
    const r = await fetch("/v1/chat/completions", {
      method: "POST", headers: headers(true),
      body: JSON.stringify({ model, stream: true, stream_options: { include_usage: true }, max_tokens: 256,
                             messages: [{ role: "user", content: prompt }] }),
    });
    if (!r.ok) { const t = await r.text(); throw new Error("HTTP " + r.status + ": " + t.slice(0, 300)); }
    await readEvents(r, (_, data) => {
      if (data === "[DONE]") return;
      const v = JSON.parse(data);
      if (v.error) throw new Error(v.error.message || JSON.stringify(v.error));
      if (v.usage) usage = v.usage;
      const d = v.choices && v.choices[0] && v.choices[0].delta;
      const text = d && (d.content || d.reasoning_content);
      if (text) {
        if (first === null) first = performance.now();
        chunks++;
        out.append(text);
        last = performance.now();
        stats.textContent = `${chunks} chunks · ${rate(chunks)} tokens/s · first token ${((first - t0) / 1000).toFixed(2)} s`;
      }
    });
    const tokens = usage ? usage.completion_tokens : chunks;
    stats.textContent = `${tokens} tokens · ${rate(tokens)} tokens/s` +
      (first === null ? "" : ` · first token ${((first - t0) / 1000).toFixed(2)} s`) + " · done";
    stats.dataset.done = "1";
  } catch (e) { stats.textContent = "failed: " + e.message; }
  send.disabled = false;
}

// ---- start --------------------------------------------------------------------------------

// Runs `fn` now, then `ms` after each run ends (a slow answer never overlaps the next);
// a hidden tab skips its turns.
function every(fn, ms) {
  const run = async () => {
    if (!document.hidden) await fn();
    setTimeout(run, ms);
  };
  return run();
}

function start() {
  $("keybox").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(KEY_ITEM, $("key").value);
    $("key").value = "";
    refreshAll();
  });
  for (const b of document.querySelectorAll(".ranges button")) {
    b.addEventListener("click", () => {
      state.range = b.dataset.range;
      for (const o of document.querySelectorAll(".ranges button")) o.classList.toggle("on", o === b);
      refreshCharts();
    });
  }
  $("log-model").addEventListener("change", () => followLog($("log-model").value));
  $("play").addEventListener("submit", play);
  // The states' restore buttons depend on the fleet's allowed actions: after it.
  every(refreshFleet, 2000).then(() => every(refreshStates, 10000));
  every(refreshCharts, 5000);
  every(refreshAlerts, 5000);
}

async function refreshAll() { await refreshFleet(); refreshCharts(); refreshAlerts(); refreshStates(); }

start();
