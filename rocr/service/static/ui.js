// The live view of one hsaemu system: GET .../view draws a frame, POST .../step runs to the
// next event. The system id and bearer token come from the URL fragment (never sent to the
// server by the browser) or the form; the token goes only into the Authorization header.
"use strict";

const PLAY_DELAY_MS = 250; // between two steps while playing: long enough to watch a change

const $ = (id) => document.getElementById(id);
let sys = null; // {id, token}
let playing = false;
let busy = false;
let frames = 0; // frames drawn: a test (or a person) can tell a new frame from an old one

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

function fromFragment() {
  const p = new URLSearchParams(location.hash.slice(1));
  const id = p.get("system");
  const token = p.get("token");
  return id && token ? { id, token } : null;
}

async function api(method, path, body) {
  const init = { method, headers: { Authorization: "Bearer " + sys.token }, cache: "no-store" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const r = await fetch(`/v1/systems/${encodeURIComponent(sys.id)}${path}`, init);
  const doc = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${doc.status || ""} ${doc.message || ""}`);
  return doc;
}

function showError(e) {
  const box = $("error");
  box.hidden = !e;
  box.textContent = e ? String(e.message || e) : "";
}

const ns = (ps) => (ps / 1000).toLocaleString("en-US", { maximumFractionDigits: 3 });

function drawClock(c, stalled) {
  $("clock").textContent =
    `host ${ns(c.host_ps)} ns · device ${ns(c.device_ps)} ns · ` +
    `${c.pending_events} pending event(s)${stalled ? " · idle" : ""}`;
  $("clock").dataset.deviceNs = String(c.device_ns);
}

function drawQueue(q) {
  const hqd = q.hqd === null ? "not mapped" : `HQD ${q.hqd}`;
  const box = el("div", { class: "queue", "data-queue": String(q.id) });
  box.append(
    el("h3", { text: `queue ${q.id} (KFD queue ${q.queue_id}) on GPU ${q.agent}, ${q.size} packets` }),
    el("div", {
      class: "indices",
      text:
        `read ${q.read_index} · write ${q.write_index} · doorbell ${q.doorbell_value} · ` +
        `${hqd} (${q.kfd_state || "unknown"})` +
        (q.inflight.length ? ` · in flight: ${q.inflight.join(", ")}` : "") +
        (q.blocked_on ? ` · blocked on packet ${q.blocked_on.packet}` : "") +
        (q.error ? ` · error ${q.error.status}: ${q.error.message}` : ""),
    }),
  );
  const ring = el("div", { class: "ring" });
  const at = (i) => ((i % q.size) + q.size) % q.size;
  for (const s of q.slots) {
    const cls = ["slot", s.type];
    if (s.slot === at(q.read_index)) cls.push("read");
    if (s.slot === at(q.write_index)) cls.push("write");
    if (q.doorbell_value >= 0 && s.slot === at(q.doorbell_value)) cls.push("doorbell");
    const short = { KERNEL_DISPATCH: "K", BARRIER_AND: "&", BARRIER_OR: "|", INVALID: "" };
    ring.append(
      el("div", {
        class: cls.join(" "),
        title: `slot ${s.slot}: packet ${s.index}, ${s.type}${s.barrier ? " (barrier bit)" : ""}`,
        text: s.type in short ? short[s.type] : s.type[0],
      }),
    );
  }
  box.append(ring);
  return box;
}

function drawGpu(g, queues) {
  const byKfd = new Map(queues.map((q) => [q.queue_id, q]));
  const box = el("div", { class: "gpu", "data-node": String(g.node) });
  box.append(el("h3", { text: `GPU ${g.node} (${g.name}), scheduler ${g.policy}` }));
  for (const h of g.hqds) {
    let what = "free";
    if (h.queue_id !== null) {
      const q = h.own ? byKfd.get(h.queue_id) : undefined;
      what = q
        ? `queue ${q.id} (KFD queue ${h.queue_id}), ${h.state}`
        : `pasid ${h.pasid} KFD queue ${h.queue_id}, ${h.state}`;
    }
    const cls = ["hqd", h.queue_id === null ? "free" : h.own ? "own" : "other"];
    box.append(el("div", { class: cls.join(" "), "data-hqd": String(h.hqd), text: `HQD ${h.hqd}: ${what}` }));
  }
  const cus = el("div", { class: "cus" });
  for (const cu of g.cus) {
    const total = cu.waves.reduce((a, b) => a + b, 0);
    const c = el("div", { class: "cu", "data-cu": String(cu.index) });
    c.append(el("div", { class: "cu-title", text: `CU ${cu.index}: ${cu.resident_wgs} WG, ${total} waves` }));
    cu.waves.forEach((w, i) => {
      const slots = w + cu.free_wave_slots[i];
      const bar = el("div", { class: "bar" }, el("div", { style: `width:${slots ? (100 * w) / slots : 0}%` }));
      c.append(el("div", { class: "simd" }, el("span", { text: `SIMD${i} ${w}` }), bar));
    });
    if (cu.kernels && cu.kernels.length) {
      c.append(el("div", { class: "cu-kernels", text: cu.kernels.map((k) => k.name || k).join(", ") }));
    }
    cus.append(c);
  }
  box.append(cus);
  return box;
}

function draw(v) {
  drawClock(v.clock, v.stalled);
  $("queues").replaceChildren(...(v.queues.length ? v.queues.map(drawQueue) : [el("p", { text: "no queues" })]));
  $("gpus").replaceChildren(...v.gpus.map((g) => drawGpu(g, v.queues)));
  const rows = [el("tr", {}, el("th", { text: "handle" }), el("th", { text: "value" }), el("th", { text: "kind" }))];
  for (const s of v.signals) {
    rows.push(
      el("tr", { "data-signal": String(s.handle) },
        el("td", { text: "0x" + s.handle.toString(16) }),
        el("td", { text: String(s.value) }),
        el("td", { text: s.interrupt ? `interrupt (event ${s.event_id})` : "polling" })),
    );
  }
  $("signals").replaceChildren(...rows);
  $("events").replaceChildren(
    ...v.events.map((e) => el("li", { text: `${ns(e.ts_ps)} ns  ${e.track}: ${e.name}` })),
  );
  frames += 1;
  document.body.dataset.frames = String(frames);
}

async function refresh() {
  draw(await api("GET", "/view"));
}

async function step() {
  const r = await api("POST", "/step", { ticks: Number($("ticks").value) });
  $("last-step").textContent = `last step: ${r.fired} event(s)`;
  await refresh();
  return r;
}

async function guarded(fn) {
  if (busy) return null;
  busy = true;
  try {
    const r = await fn();
    showError(null);
    return r;
  } catch (e) {
    showError(e);
    setPlaying(false);
    return null;
  } finally {
    busy = false;
  }
}

function setPlaying(on) {
  playing = on;
  $("play").disabled = on;
  $("pause").disabled = !on;
  $("step").disabled = on;
}

async function play() {
  setPlaying(true);
  while (playing) {
    const r = await guarded(step);
    if (!r || r.stalled) break; // nothing pending does work: playing on would stand still
    await new Promise((ok) => setTimeout(ok, PLAY_DELAY_MS));
  }
  setPlaying(false);
}

function start(s) {
  sys = s;
  $("connect").hidden = true;
  $("system-label").textContent = `system ${s.id}`;
  guarded(refresh);
}

$("step").addEventListener("click", () => guarded(step));
$("play").addEventListener("click", play);
$("pause").addEventListener("click", () => setPlaying(false));
$("refresh").addEventListener("click", () => guarded(refresh));
$("connect").addEventListener("submit", (ev) => {
  ev.preventDefault();
  start({ id: $("system-input").value.trim(), token: $("token-input").value.trim() });
});
window.addEventListener("hashchange", () => {
  const s = fromFragment();
  if (s) start(s);
});

const initial = fromFragment();
if (initial) start(initial);
else $("connect").hidden = false;
