// hpsearch leaderboard: fetch /api/leaderboard, then sort, filter and refresh in the browser.
// Plain JS, no build step. DOM is built with textContent only (study names are user data).
"use strict";

const REFRESH_MS = 10000;
const PAGE_ROWS = 500;
const NUMERIC = new Set(["rank", "trial", "val_accuracy", "test_accuracy", "beats", "epochs",
  "wall_minutes", "gpu_minutes", "n_params"]);

const state = {
  board: null,
  sort: "rank",
  dir: 1,
  showAll: false,
  timer: null,
};

const $ = (id) => document.getElementById(id);

function params() {
  const q = new URLSearchParams(window.location.search);
  return {
    dataset: q.get("dataset") || "",
    study: q.get("study") || "",
    state: q.get("state") || "",
    q: q.get("q") || "",
    sort: q.get("sort") || "rank",
    dir: q.get("dir") === "desc" ? -1 : 1,
  };
}

function saveParams() {
  const q = new URLSearchParams();
  const put = (k, v) => { if (v) q.set(k, v); };
  put("dataset", $("f-dataset").value);
  put("study", $("f-study").value);
  put("state", $("f-state").value);
  put("q", $("f-text").value.trim());
  if (state.sort !== "rank") put("sort", state.sort);
  if (state.dir < 0) put("dir", "desc");
  const s = q.toString();
  window.history.replaceState(null, "", window.location.pathname + (s ? "?" + s : ""));
}

function apiQuery() {
  const q = new URLSearchParams();
  if ($("f-dataset").value) q.set("dataset", $("f-dataset").value);
  if ($("f-study").value) q.set("study", $("f-study").value);
  return q.toString();
}

async function load() {
  const query = apiQuery();
  try {
    const resp = await fetch("/api/leaderboard" + (query ? "?" + query : ""),
      { credentials: "same-origin", headers: { Accept: "application/json" } });
    const body = await resp.json();
    if (!resp.ok) throw new Error(body.error || resp.statusText);
    state.board = body;
    $("error").hidden = true;
  } catch (e) {
    $("error").textContent = "could not load the leaderboard: " + e.message;
    $("error").hidden = false;
    return;
  }
  fillSelectors();
  render();
  const stamp = Date.now();
  for (const x of ["trial", "time"]) {
    const q = new URLSearchParams(query);
    q.set("x", x);
    q.set("_", String(stamp));
    $("plot-" + x).src = "/leaderboard/plot.svg?" + q.toString();
  }
  $("updated").textContent = "updated " + new Date().toLocaleTimeString();
}

function option(select, value, label) {
  const o = document.createElement("option");
  o.value = value;
  o.textContent = label;
  select.appendChild(o);
}

function fillSelectors() {
  const b = state.board;
  const ds = $("f-dataset");
  const dsWanted = ds.value || b.dataset || "";
  ds.textContent = "";
  for (const d of b.datasets) option(ds, d, d);
  ds.value = b.datasets.includes(dsWanted) ? dsWanted : (b.dataset || "");
  const st = $("f-study");
  const stWanted = st.value || b.study || "";
  st.textContent = "";
  option(st, "", "all studies");
  for (const s of b.studies) {
    if (s.dataset === b.dataset) option(st, s.name, `${s.name} (${s.n_trials})`);
  }
  st.value = stWanted;
}

function fmtPct(v) { return v === null || v === undefined ? "" : (v * 100).toFixed(2) + "%"; }

// The objective's metric (hpsearch.display: is_accuracy, format_metric, metric_label, ranked_by).
const DEFAULT_METRIC = "val_accuracy";
function metric() { return (state.board && state.board.metric) || DEFAULT_METRIC; }
function isAccuracy(m) { return m.endsWith("accuracy"); }
function fmtMetric(v) {
  if (v === null || v === undefined) return "";
  return isAccuracy(metric()) ? fmtPct(v) : v.toFixed(4);
}
function metricLabel(m) { return m === DEFAULT_METRIC ? "val acc" : m.replaceAll("_", " "); }
function rankedBy(m, direction) {
  const name = m === DEFAULT_METRIC ? "validation accuracy" : m;
  return `${name} (${direction === "minimize" ? "lower" : "higher"} is better)`;
}
function fmtPm(mean, std, fmt) {
  if (mean === null || mean === undefined) return "";
  return fmt(mean) + (std === null || std === undefined ? "" : " ± " + fmt(std));
}
function fmtNum(v, digits) { return v === null || v === undefined ? "" : v.toFixed(digits); }

function sortValue(r, key) {
  if (r.kind === "baseline") {
    if (key === "val_accuracy" || key === "test_accuracy") return r.test_accuracy;
    return null;
  }
  if (key === "beats") return r.beats.length;
  return r[key];
}

function visibleRows() {
  const b = state.board;
  const wantState = $("f-state").value;
  const text = $("f-text").value.trim().toLowerCase();
  const withBaselines = $("f-baselines").checked;
  const interleave = state.sort === "rank" || state.sort === "val_accuracy" ||
    state.sort === "test_accuracy";
  let rows = b.rows.map((r, i) => ({ r, i })).filter(({ r }) => {
    if (r.kind === "baseline") return withBaselines && interleave;
    if (wantState && r.state !== wantState) return false;
    if (text && !((r.config || "") + " " + JSON.stringify(r.params)).toLowerCase().includes(text)) {
      return false;
    }
    return true;
  });
  // Unranked trials (running, queued, failed) stay below the ranking whatever the sort.
  const apart = (r) => (r.kind === "trial" && r.rank === null ? 1 : 0);
  if (state.sort !== "rank") {
    const key = state.sort;
    rows.sort((a, c) => {
      if (apart(a.r) !== apart(c.r)) return apart(a.r) - apart(c.r);
      const x = sortValue(a.r, key), y = sortValue(c.r, key);
      if (x === y) return a.i - c.i;
      if (x === null || x === undefined) return 1;
      if (y === null || y === undefined) return -1;
      const cmp = NUMERIC.has(key) ? x - y : String(x).localeCompare(String(y));
      return state.dir * (cmp !== 0 ? cmp : a.i - c.i);
    });
  } else if (state.dir < 0) {
    rows = rows.filter(({ r }) => !apart(r)).reverse().concat(rows.filter(({ r }) => apart(r)));
  }
  return rows.map(({ r }) => r);
}

function cell(tr, text, cls) {
  const td = document.createElement("td");
  if (cls) td.className = cls;
  if (text instanceof Node) td.appendChild(text); else td.textContent = text;
  tr.appendChild(td);
  return td;
}

function link(href, text) {
  const a = document.createElement("a");
  a.href = href;
  a.textContent = text;
  return a;
}

// The same words as the reports and `hpsearch status` (hpsearch.report.state_label).
function stateLabel(r) {
  const notes = [];
  if (r.fail_reason) notes.push(r.fail_reason);
  if (r.attempts && r.attempts.length) {
    notes.push("retry of " + r.attempts.map((n) => "#" + n).join(", "));
  }
  return r.state + (notes.length ? ` (${notes.join("; ")})` : "");
}

function separator(tbody, text) {
  const tr = document.createElement("tr");
  tr.className = "unranked-head";
  const td = cell(tr, text);
  td.colSpan = 12;
  tbody.appendChild(tr);
}

function render() {
  const b = state.board;
  const rows = visibleRows();
  const tbody = document.querySelector("#leaderboard tbody");
  const frag = document.createDocumentFragment();
  const limit = state.showAll ? rows.length : PAGE_ROWS;
  const studies = new Map(b.studies.map((s) => [s.name, s]));
  let apartShown = false;
  for (const r of rows.slice(0, limit)) {
    if (r.kind === "trial" && r.rank === null && !apartShown) {
      separator(frag, "Not ranked: running, queued and failed trials (only finished trials " +
        "get a rank)");
      apartShown = true;
    }
    const tr = document.createElement("tr");
    if (r.kind === "baseline") {
      tr.className = "baseline";
      const acc = fmtPct(r.test_accuracy);
      cell(tr, "", "num");
      cell(tr, "baseline");
      cell(tr, "", "num");
      cell(tr, r.metric === "val" ? acc : "", "num");
      cell(tr, r.metric === "val" ? "" : acc, "num");
      for (let i = 0; i < 5; i++) cell(tr, "", "num");
      const td = cell(tr, `${r.model} — ${r.source}`, "config");
      td.title = `${r.metric} accuracy ${acc}, source: ${r.source}`;
      cell(tr, r.metric === "val" ? "val metric" : "test metric", "state");
    } else {
      tr.className = `trial ${r.state}` + (r.beats.length ? " beats" : "") +
        (r.rank === null ? " unranked" : "");
      tr.dataset.study = r.study;
      tr.dataset.trial = r.trial;
      cell(tr, r.rank === null ? "" : String(r.rank), "num");
      const s = studies.get(r.study);
      cell(tr, s ? link(s.dashboard_url, r.study) : r.study);
      const a = link(r.dashboard_url, String(r.trial));
      a.className = "trial-link";
      a.title = "open this trial in optuna-dashboard";
      cell(tr, a, "num");
      cell(tr, fmtMetric(r.val_accuracy), "num");
      cell(tr, fmtPct(r.test_accuracy), "num");
      const beats = cell(tr, r.beats.length ? "★ " + r.beats.length : "", "num star");
      if (r.beats.length) beats.title = "beats: " + r.beats.join("; ");
      cell(tr, r.epochs === null ? "" : String(r.epochs), "num");
      cell(tr, fmtNum(r.wall_minutes, 1), "num");
      cell(tr, fmtNum(r.gpu_minutes, 1), "num");
      cell(tr, r.n_params === null ? "" : r.n_params.toLocaleString("en-US"), "num");
      const cfg = cell(tr, r.config || "", "config");
      cfg.title = JSON.stringify(r.params);
      const badge = document.createElement("span");
      badge.className = "badge " + r.state;
      badge.textContent = stateLabel(r);
      cell(tr, badge, "state");
    }
    frag.appendChild(tr);
  }
  tbody.textContent = "";
  tbody.appendChild(frag);
  $("more").hidden = rows.length <= limit;
  $("show-all").textContent = `show all ${rows.length} rows`;
  for (const th of document.querySelectorAll("#leaderboard th")) {
    th.classList.toggle("sorted", th.dataset.key === state.sort);
    th.classList.toggle("desc", th.dataset.key === state.sort && state.dir < 0);
  }
  const c = b.counts;
  const trials = rows.filter((r) => r.kind === "trial").length;
  const nStudies = b.studies.filter((s) => s.dataset === b.dataset).length;
  $("summary").textContent = `${b.dataset || "no studies yet"}: ${b.n_trials} trials in ` +
    `${nStudies} ${nStudies === 1 ? "study" : "studies"} · complete ` +
    `${c.complete} · pruned ${c.pruned} · failed ${c.fail} · running ${c.running} · queued ` +
    `${c.waiting}` + (b.resumed ? ` · ${b.resumed} interrupted attempt(s) resumed` : "") +
    ` · ${trials} shown · ${b.baselines.length} baselines`;
  fillSmall("failures", Object.entries(b.failed_by_cause).map(([k, v]) => [k, v]));
  fillSmall("jobs", b.slurm_jobs.map((j) => [j.job, j.tasks, j.trials, j.complete, j.pruned,
    j.fail, j.running]));
  const m = metric();
  $("metric-head").textContent = metricLabel(m);
  $("ranked-by").textContent = rankedBy(m, b.direction);
  $("retrain-by").textContent = rankedBy(m, b.direction);
  const short = metricLabel(m).replace("val acc", "val");
  $("retrain-search-head").textContent = "search " + short;
  $("retrain-mean-head").textContent = short + " mean ± std";
  renderRetrained(b.rows, b.direction === "minimize" ? 1 : -1);
  $("storage").textContent = `storage ${b.storage} · ${b.read_only ? "read-only" : "read-write"}`;
}

// Trials re-trained by `hpsearch best --seeds K --top N`: the same table as the reports.
function renderRetrained(rows, sign) {
  const done = rows.filter((r) => r.kind === "trial" && r.retrain_seeds);
  done.sort((a, c) => sign * ((a.retrain_val_mean || 0) - (c.retrain_val_mean || 0)) ||
    String(a.study).localeCompare(String(c.study)) || a.trial - c.trial);
  const tbody = document.querySelector("#retrained tbody");
  tbody.textContent = "";
  for (const r of done) {
    const tr = document.createElement("tr");
    tr.dataset.trial = r.trial;
    cell(tr, String(r.trial), "num");
    cell(tr, r.study || "");
    cell(tr, fmtMetric(r.val_accuracy), "num");
    cell(tr, fmtPct(r.test_accuracy), "num");
    cell(tr, fmtPm(r.retrain_val_mean, r.retrain_val_std, fmtMetric), "num");
    cell(tr, fmtPm(r.retrain_test_mean, r.retrain_test_std, fmtPct), "num");
    cell(tr, String(r.retrain_seeds), "num");
    cell(tr, r.config || "", "config");
    tbody.appendChild(tr);
  }
  $("retrained-section").hidden = done.length === 0;
}

function fillSmall(id, rows) {
  const tbody = document.querySelector(`#${id} tbody`);
  tbody.textContent = "";
  for (const row of rows) {
    const tr = document.createElement("tr");
    row.forEach((v, i) => cell(tr, String(v), i ? "num" : ""));
    tbody.appendChild(tr);
  }
}

function schedule() {
  if (state.timer) clearInterval(state.timer);
  state.timer = null;
  if ($("f-refresh").checked) {
    state.timer = setInterval(() => { if (!document.hidden) load(); }, REFRESH_MS);
  }
}

function init() {
  const p = params();
  option($("f-dataset"), p.dataset, p.dataset);
  $("f-dataset").value = p.dataset;
  option($("f-study"), p.study, p.study);
  $("f-study").value = p.study;
  $("f-state").value = p.state;
  $("f-text").value = p.q;
  state.sort = p.sort;
  state.dir = p.dir;
  $("f-dataset").addEventListener("change", () => {
    $("f-study").value = "";
    saveParams();
    load();
  });
  $("f-study").addEventListener("change", () => { saveParams(); load(); });
  for (const id of ["f-state", "f-baselines"]) {
    $(id).addEventListener("change", () => { saveParams(); if (state.board) render(); });
  }
  $("f-text").addEventListener("input", () => { saveParams(); if (state.board) render(); });
  $("f-refresh").addEventListener("change", schedule);
  $("show-all").addEventListener("click", () => { state.showAll = true; render(); });
  for (const th of document.querySelectorAll("#leaderboard th")) {
    th.addEventListener("click", () => {
      const key = th.dataset.key;
      if (state.sort === key) state.dir = -state.dir;
      else { state.sort = key; state.dir = NUMERIC.has(key) && key !== "rank" && key !== "trial" ? -1 : 1; }
      saveParams();
      if (state.board) render();
    });
  }
  load();
  schedule();
}

document.addEventListener("DOMContentLoaded", init);
