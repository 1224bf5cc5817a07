// eddy's dashboard: polls the query server every second and draws what it answers.
// Plain JavaScript, no dependency; charts are hand-drawn SVG.
"use strict";

const POLL_MS = 1000;
const KEEP = 120; // samples kept for the charts (two minutes at one per second)
const COLORS = ["#2b7bb9", "#e5682a", "#3a9a48", "#b8860b", "#8e44ad", "#c0392b", "#16a085"];

const samples = []; // {t, rate, writes, delay, freshness, dead: {reason: total}}
let lastWrites = null; // {t, total} of the previous poll, for sink writes per second
let lastEvents = null; // {t, total}, for events per second when the server gives none

const $ = (id) => document.getElementById(id);

function fmtNum(n, digits) {
  if (n === null || n === undefined || Number.isNaN(n)) return "–";
  return Number(n).toLocaleString("en-US", { maximumFractionDigits: digits ?? 0 });
}

function fmtMs(ms) {
  if (ms === null || ms === undefined) return "–";
  const a = Math.abs(ms);
  if (a < 1000) return `${Math.round(ms)} ms`;
  if (a < 120000) return `${(ms / 1000).toFixed(1)} s`;
  if (a < 7200000) return `${(ms / 60000).toFixed(1)} min`;
  return `${(ms / 3600000).toFixed(1)} h`;
}

function fmtTime(ms) {
  if (ms === null || ms === undefined) return "–";
  return new Date(ms).toISOString().slice(11, 19) + "Z";
}

function fmtBytes(b) {
  if (b === null || b === undefined) return "–";
  if (b < 1 << 20) return `${(b / 1024).toFixed(0)} KiB`;
  if (b < 1 << 30) return `${(b / (1 << 20)).toFixed(1)} MiB`;
  return `${(b / (1 << 30)).toFixed(2)} GiB`;
}

function setText(id, text) {
  const el = $(id);
  if (el.textContent !== text) el.textContent = text;
}

// Replaces the body of table `id` with `rows` (arrays of cell texts or {text, cls}).
function fillTable(id, rows, empty) {
  const tbody = $(id).tBodies[0];
  const out = document.createDocumentFragment();
  if (rows.length === 0) {
    const tr = document.createElement("tr");
    const td = document.createElement("td");
    td.colSpan = $(id).tHead.rows[0].cells.length;
    td.className = "muted";
    td.textContent = empty || "none";
    tr.appendChild(td);
    out.appendChild(tr);
  }
  for (const row of rows) {
    const tr = document.createElement("tr");
    for (const cell of row) {
      const td = document.createElement("td");
      if (cell !== null && typeof cell === "object") {
        td.textContent = cell.text;
        if (cell.cls) td.className = cell.cls;
        if (cell.title) td.title = cell.title;
      } else {
        td.textContent = cell;
      }
      tr.appendChild(td);
    }
    out.appendChild(tr);
  }
  tbody.replaceChildren(out);
}

async function getJson(path) {
  const resp = await fetch(path, { cache: "no-store" });
  let body = null;
  try {
    body = await resp.json();
  } catch (_) {
    body = null;
  }
  return { status: resp.status, body };
}

// ---- charts -------------------------------------------------------------------------------

const SVG_NS = "http://www.w3.org/2000/svg";

function svgEl(name, attrs, text) {
  const el = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

// Draws `series` ([{name, points: [[t, v], …]}]) as lines into the SVG `id`, with a y axis
// from 0 to the largest value and the time axis over the samples kept.
function lineChart(id, series) {
  const svg = $(id);
  const W = 480, H = 160, L = 48, R = 8, T = 8, B = 18;
  const all = series.flatMap((s) => s.points);
  const parts = [];
  if (all.length === 0) {
    parts.push(svgEl("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "axis" }, "waiting for data"));
    svg.replaceChildren(...parts);
    svg.dataset.points = "0";
    return;
  }
  const t0 = Math.min(...all.map((p) => p[0]));
  const t1 = Math.max(...all.map((p) => p[0]), t0 + 1);
  const vmax = Math.max(...all.map((p) => p[1]), 1e-9) * 1.1;
  const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
  const y = (v) => T + (1 - v / vmax) * (H - T - B);
  for (const f of [0, 0.5, 1]) {
    const v = vmax * f;
    parts.push(svgEl("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid" }));
    parts.push(svgEl("text", { x: L - 4, y: y(v) + 4, "text-anchor": "end", class: "axis" }, fmtNum(v, v < 10 ? 1 : 0)));
  }
  parts.push(svgEl("text", { x: L, y: H - 4, class: "axis" }, fmtTime(t0)));
  parts.push(svgEl("text", { x: W - R, y: H - 4, "text-anchor": "end", class: "axis" }, fmtTime(t1)));
  series.forEach((s, i) => {
    if (s.points.length === 0) return;
    const d = s.points.map((p, j) => `${j ? "L" : "M"}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join("");
    parts.push(svgEl("path", { d, class: "line", stroke: COLORS[i % COLORS.length], "data-series": s.name }));
  });
  svg.replaceChildren(...parts);
  svg.dataset.points = String(all.length);
  const legend = $(id.replace("chart-", "legend-"));
  if (legend) {
    legend.replaceChildren(...series.map((s, i) => {
      const span = document.createElement("span");
      const last = s.points.length ? s.points[s.points.length - 1][1] : null;
      span.innerHTML = `<i style="background:${COLORS[i % COLORS.length]}"></i>`;
      span.appendChild(document.createTextNode(`${s.name}: ${fmtNum(last, last !== null && last < 10 ? 2 : 0)}`));
      return span;
    }));
  }
}

function drawCharts() {
  const pts = (f) => samples.filter((s) => f(s) !== null && f(s) !== undefined).map((s) => [s.t, f(s)]);
  lineChart("chart-rate", [
    { name: "events in / s", points: pts((s) => s.rate) },
    { name: "sink writes / s", points: pts((s) => s.writes) },
  ]);
  lineChart("chart-delay", [{ name: "wall clock − watermark (s)", points: pts((s) => (s.delay === null ? null : s.delay / 1000)) }]);
  const reasons = [...new Set(samples.flatMap((s) => Object.keys(s.dead)))].sort();
  lineChart("chart-dead", reasons.map((r) => ({ name: r, points: pts((s) => s.dead[r] ?? 0) })));
  lineChart("chart-freshness", [{ name: "freshness (ms)", points: pts((s) => s.freshness) }]);
}

// ---- status -------------------------------------------------------------------------------

function sumOver(list, f) {
  let any = false, total = 0;
  for (const x of list) {
    const v = f(x);
    if (v !== null && v !== undefined) { any = true; total += v; }
  }
  return any ? total : null;
}

function procName(p) {
  return `${p.mode}:${p.process}`;
}

function renderStatus(st, now) {
  const procs = (st.processes || []).filter((p) => !p.stale);
  const shown = st.processes || [];
  setText("status-source", st.source || "?");
  const events = sumOver(procs, (p) => p.events_in);
  let rate = sumOver(procs, (p) => p.events_in_per_second);
  if (rate === null && events !== null && lastEvents && now > lastEvents.t) {
    rate = ((events - lastEvents.total) * 1000) / (now - lastEvents.t);
  }
  if (events !== null) lastEvents = { t: now, total: events };
  const writesTotal = sumOver(procs, (p) => sumOver(p.sinks || [], (s) => s.writes));
  let writes = null;
  if (writesTotal !== null && lastWrites && now > lastWrites.t) {
    writes = ((writesTotal - lastWrites.total) * 1000) / (now - lastWrites.t);
  }
  if (writesTotal !== null) lastWrites = { t: now, total: writesTotal };
  // The live pipeline's watermark: the least of its processes (a replay trails on purpose).
  const live = procs.filter((p) => p.mode !== "replay");
  const wmProcs = live.length ? live : procs;
  const watermark = wmProcs.length ? Math.min(...wmProcs.map((p) => p.watermark_ms ?? Infinity)) : Infinity;
  const wm = Number.isFinite(watermark) ? watermark : null;
  const delay = wm === null ? null : (st.now_ms ?? now) - wm;
  const dead = {};
  for (const p of procs) for (const [r, n] of Object.entries(p.dead_letters || {})) dead[r] = (dead[r] || 0) + n;
  const deadTotal = Object.values(dead).reduce((a, b) => a + b, 0);
  const ckAge = procs.length ? Math.max(...procs.map((p) => p.checkpoint?.age_ms ?? -1)) : -1;
  const lag = sumOver(procs, (p) => sumOver(p.partitions || [], (x) => x.lag_records));

  setText("kpi-rate", fmtNum(rate, 0));
  setText("kpi-events", fmtNum(events));
  setText("kpi-watermark", wm === null ? "–" : fmtTime(wm));
  setText("kpi-delay", fmtMs(delay));
  setText("kpi-checkpoint", ckAge < 0 ? "none yet" : fmtMs(ckAge));
  setText("kpi-dead", fmtNum(deadTotal));
  setText("kpi-late", fmtNum(sumOver(procs, (p) => p.late_events)));
  setText("kpi-lag", fmtNum(lag));
  setText("kpi-rss", fmtBytes(sumOver(procs, (p) => p.rss_bytes)));

  fillTable("processes", shown.map((p) => [
    { text: procName(p), cls: p.stale ? "bad" : "" },
    `${p.host || "?"} / ${p.pid}`,
    fmtNum(p.events_in),
    fmtMs(p.watermark_delay_ms),
    fmtBytes(p.rss_bytes),
    { text: fmtMs(p.age_ms) + (p.stale ? " (stale)" : ""), cls: p.stale ? "bad" : "" },
  ]), "no pipeline process publishes its status");
  fillTable("partitions", shown.flatMap((p) => (p.partitions || []).map((x) => [
    procName(p), String(x.partition), fmtNum(x.lag_records), fmtMs(x.lag_ms),
  ])), "no Kafka partition reported (the demo generates its events)");
  fillTable("checkpoints", shown.map((p) => {
    const c = p.checkpoint || {};
    const offsets = (c.resume_offsets || []).map((o) => `${o.partition}:${o.offset}`).join(" ");
    return [procName(p), fmtNum(c.committed), fmtNum(c.failures), c.epoch ?? "–", fmtMs(c.age_ms), fmtMs(c.duration_ms), offsets || "–"];
  }), "no process");
  const replays = shown.filter((p) => p.replay);
  setText("replay", replays.map((p) => `replay ${procName(p)}: ${(p.replay.progress_ratio * 100).toFixed(1)} % at ${fmtNum(p.replay.records_per_second)} records/s, ETA ${p.replay.eta_seconds === null ? "?" : p.replay.eta_seconds + " s"}`).join("; "));
  const dropped = {};
  for (const p of procs) for (const [r, n] of Object.entries(p.dead_letters_dropped || {})) dropped[r] = (dropped[r] || 0) + n;
  const reasons = [...new Set([...Object.keys(dead), ...Object.keys(dropped)])].sort();
  fillTable("dead", reasons.map((r) => [r, fmtNum(dead[r] || 0), fmtNum(dropped[r] || 0)]), "no dead letter");
  return { rate, writes, delay, dead, deadTotal, processes: procs.length, sinks: procs.flatMap((p) => (p.sinks || []).map((s) => ({ ...s, proc: procName(p) }))) };
}

function renderParts(health, digest, statusOk) {
  const rows = [];
  let source = { text: "unknown", cls: "bad" };
  if (statusOk && digest.processes === 0) source = { text: "no process", cls: "bad" };
  else if (statusOk) source = { text: "ok", cls: "ok" };
  rows.push([
    "source (pipeline)", source, "", "", "",
    statusOk ? `${digest.processes} process${digest.processes === 1 ? "" : "es"}, ${fmtNum(digest.rate)}/s` : "–",
  ]);
  for (const s of digest.sinks) {
    rows.push([
      `sink ${s.sink} (${s.proc})`,
      { text: s.state, cls: s.state === "ok" ? "ok" : "bad" },
      fmtNum(s.writes), fmtNum(s.errors),
      s.mean_write_ms === null ? "–" : `${s.mean_write_ms.toFixed(2)} ms`,
      s.last_error ? { text: `${fmtTime(s.last_error_ms)} ${s.last_error}`, title: s.last_error } : "–",
    ]);
  }
  if (health && health.stores) {
    for (const [store, state] of Object.entries(health.stores)) {
      rows.push([`store ${store} (query server)`, { text: state === "ok" ? "ok" : "down", cls: state === "ok" ? "ok" : "bad" }, "", "", "", state === "ok" ? "–" : state]);
    }
  }
  fillTable("parts", rows);
}

function renderTop(top) {
  const meta = top; // the answer meta is flattened into the body
  setText("top-meta", `as of ${fmtTime(meta.as_of_ms)} · freshness ${fmtMs(meta.freshness_ms)} · from ${meta.source ?? "?"}`);
  fillTable("top", (top.campaigns || []).map((c, i) => [
    String(i + 1), String(c.campaign_id), fmtNum(c.views), fmtNum(c.clicks), fmtNum(c.conversions),
    fmtNum(c.revenue, 2), c.ctr === null ? "–" : `${(c.ctr * 100).toFixed(2)} %`, fmtNum(c.score, 1),
  ]), "no campaign yet");
}

function renderSamples() {
  const recent = samples.slice(-5).reverse();
  fillTable("samples", recent.map((s) => [
    fmtTime(s.t), fmtNum(s.rate), fmtNum(s.writes, 1), fmtMs(s.delay), fmtNum(s.deadTotal),
  ]), "no sample yet");
}

let polling = false;
async function poll() {
  if (polling) return;
  polling = true;
  const now = Date.now();
  try {
    const [status, health, top] = await Promise.all([
      getJson("/v1/status").catch(() => null),
      getJson("/healthz").catch(() => null),
      getJson("/v1/campaigns/top?k=10").catch(() => null),
    ]);
    const reachable = status || health || top;
    $("conn").textContent = reachable ? "live" : "server unreachable";
    $("conn").className = "badge " + (reachable ? "ok" : "bad");
    if (health && health.body) {
      $("health").textContent = `health ${health.body.status}`;
      $("health").className = "badge " + (health.body.status === "ok" ? "ok" : "bad");
    }
    let digest = { rate: null, writes: null, delay: null, dead: {}, deadTotal: null, processes: 0, sinks: [] };
    const statusOk = status && status.status === 200 && status.body;
    if (statusOk) {
      digest = renderStatus(status.body, now);
    } else if (status) {
      const why = `/v1/status answered ${status.status}: ${status.body && status.body.error ? status.body.error.message : "no body"}`;
      for (const id of ["processes", "partitions", "checkpoints"]) fillTable(id, [], why);
    }
    renderParts(health && health.body, digest, statusOk);
    let freshness = null;
    if (top && top.status === 200 && top.body) {
      renderTop(top.body);
      const meta = top.body; // as_of_ms, updated_at_ms, freshness_ms, source: flattened
      // The store's own update time when it keeps one (Redis), else how far the answer's
      // watermark trails the wall clock.
      freshness = meta.freshness_ms ?? (meta.as_of_ms ? now - meta.as_of_ms : null);
      setText("kpi-freshness", fmtMs(freshness));
      $("kpi-freshness").title = meta.freshness_ms === null || meta.freshness_ms === undefined
        ? "now − as_of of the last top-campaigns answer (its store keeps no update time)"
        : "freshness_ms of the last top-campaigns answer (now − the store's last update)";
    } else if (top && top.body && top.body.error) {
      setText("top-meta", top.body.error.message);
    }
    if (reachable) {
      samples.push({ t: now, rate: digest.rate, writes: digest.writes, delay: digest.delay, freshness, dead: digest.dead, deadTotal: digest.deadTotal });
      while (samples.length > KEEP) samples.shift();
      drawCharts();
      renderSamples();
      setText("updated", fmtTime(now));
    }
  } finally {
    polling = false;
  }
}

// ---- query form ---------------------------------------------------------------------------

function queryUrl() {
  const kind = $("q-kind").value;
  const raw = $("q-id").value.trim();
  const id = raw === "" ? null : Number(raw);
  if (kind === "counts") {
    const to = Date.now() + 60000;
    const p = new URLSearchParams({ from: String(to - 3600000), to: String(to) });
    if ($("q-type").value) p.set("event_type", $("q-type").value);
    if (id !== null) p.set("campaign_id", String(id));
    return `/v1/counts?${p}`;
  }
  const n = id ?? 0;
  if (kind === "campaign") return `/v1/campaigns/${n}`;
  if (kind === "similar") return `/v1/users/${n}/similar`;
  return `/v1/users/${n}/recommendations`;
}

function resultTable(head, rows) {
  const table = document.createElement("table");
  table.innerHTML = `<thead><tr>${head.map((h) => `<th>${h}</th>`).join("")}</tr></thead><tbody></tbody>`;
  for (const row of rows) {
    const tr = table.tBodies[0].insertRow();
    for (const cell of row) tr.insertCell().textContent = cell;
  }
  return table;
}

function metaLine(m) {
  const p = document.createElement("p");
  p.className = "muted";
  p.textContent = `as of ${fmtTime(m.as_of_ms)} · freshness ${fmtMs(m.freshness_ms)} · from ${m.source}`;
  return p;
}

async function ask(ev) {
  if (ev) ev.preventDefault();
  const url = queryUrl();
  $("q-url").textContent = `GET ${url}`;
  const out = $("q-result");
  const { status, body } = await getJson(url);
  const parts = [];
  if (status !== 200 || !body) {
    const p = document.createElement("p");
    p.className = "bad";
    p.textContent = `${status}: ${body && body.error ? body.error.message : "no answer"}`;
    parts.push(p);
  } else if ("series" in body) {
    const p = document.createElement("p");
    p.className = "muted";
    p.textContent = `watermark ${fmtTime(body.watermark_ms)} · freshness ${fmtMs(body.freshness_ms)} · batch ${body.layers.batch.source} (${body.layers.batch.windows} windows), speed ${body.layers.speed.source} (${body.layers.speed.windows} windows)${body.degraded ? " · DEGRADED" : ""}`;
    parts.push(p);
    const rows = body.series.slice(-15).reverse().map((s) => [fmtTime(s.window_start_ms), s.event_type, fmtNum(s.count), fmtNum(s.sum_amount, 2), s.final ? "final" : "open", s.source]);
    parts.push(resultTable(["window", "type", "count", "sum", "", "source"], rows));
  } else if ("campaign_id" in body) {
    parts.push(metaLine(body));
    const c = body; // the campaign and the answer meta are flattened into the body
    parts.push(resultTable(["campaign", "views", "clicks", "conversions", "revenue", "score"], [[c.campaign_id, fmtNum(c.views), fmtNum(c.clicks), fmtNum(c.conversions), fmtNum(c.revenue, 2), fmtNum(c.score, 1)]]));
  } else if ("similar" in body) {
    parts.push(metaLine(body));
    parts.push(resultTable(["user", "jaccard", "shared", "union"], body.similar.map((s) => [s.user_id, s.jaccard.toFixed(3), s.shared, s.union])));
  } else if ("recommendations" in body) {
    parts.push(metaLine(body));
    parts.push(resultTable(["campaign", "score", "campaign score", "because"], body.recommendations.map((r) => [r.campaign_id, r.score.toFixed(2), r.campaign_score.toFixed(1), r.because.map((b) => `${b.user_id} (${b.jaccard.toFixed(2)})`).join(", ")])));
  }
  const pre = document.createElement("details");
  pre.innerHTML = "<summary>JSON</summary>";
  const code = document.createElement("pre");
  code.textContent = JSON.stringify(body, null, 2);
  pre.appendChild(code);
  parts.push(pre);
  out.replaceChildren(...parts);
  out.dataset.status = String(status);
}

$("query").addEventListener("submit", (ev) => { ask(ev).catch((e) => { $("q-result").textContent = String(e); }); });
$("q-kind").addEventListener("change", () => {
  $("q-type-label").hidden = $("q-kind").value !== "counts";
});

poll();
setInterval(poll, POLL_MS);
