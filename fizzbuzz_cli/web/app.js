// fizz dashboard: polls GET /stats, GET /workers and GET /tasks every 2 s and draws them.
// Plain JavaScript, no build step, nothing fetched from elsewhere. Text from the server is
// only ever set through textContent (never parsed as HTML). With a token on the server, the
// page asks for it once, keeps it in this browser (localStorage) and sends it as a bearer
// header; a wrong or changed token asks again.
"use strict";

(function () {
  const REFRESH_MS = 2000;
  const TOKEN_KEY = "fizz.token";
  const SPARK_SAMPLES = 90;

  const $ = (id) => document.getElementById(id);
  const numbers = new Intl.NumberFormat("en-US");
  const rates = [];
  let token = localStorage.getItem(TOKEN_KEY);
  let timer = null;
  let waitingForToken = false;
  let generation = 0; // a refresh started before the filters changed is not drawn

  class NeedToken extends Error {}

  async function getJSON(path) {
    const headers = { Accept: "application/json" };
    if (token) headers.Authorization = "Bearer " + token;
    const response = await fetch(path, { headers, cache: "no-store" });
    if (response.status === 401) throw new NeedToken();
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      throw new Error(`${path}: HTTP ${response.status}, not JSON`);
    }
    if (!response.ok) {
      throw new Error(`${path}: ${(body && body.error) || "HTTP " + response.status}`);
    }
    return body;
  }

  function tasksPath() {
    const query = new URLSearchParams();
    const type = $("filter-type").value;
    const status = $("filter-status").value;
    if (type) query.set("filters.type", type);
    if (status) query.set("filters.status", status);
    query.set("limit", $("filter-limit").value);
    query.set("order", "desc");
    return "tasks?" + query.toString();
  }

  async function refresh() {
    clearTimeout(timer);
    const mine = ++generation;
    try {
      const [stats, workers, tasks] = await Promise.all([
        getJSON("stats"), getJSON("workers"), getJSON(tasksPath()),
      ]);
      if (mine !== generation) return;
      drawStats(stats);
      drawWorkers(workers);
      drawTasks(tasks);
      $("board").hidden = false;
      setStatus(`updated ${clock(new Date())} · database time ${stats.at}`, false);
    } catch (error) {
      if (mine !== generation) return;
      if (error instanceof NeedToken) {
        askToken(token ? "That token was refused: try again." : "");
        return; // polling resumes once a token is given
      }
      setStatus(`cannot reach fizz: ${error.message}; retrying`, true);
    }
    if (mine === generation) timer = setTimeout(refresh, REFRESH_MS);
  }

  // ------------------------------------------------------------------ drawing

  function drawStats(s) {
    const t = s.tasks;
    setNumber("waiting", t.Waiting);
    setNumber("claimed", t.Claimed);
    setNumber("complete", t.Complete);
    setNumber("overdue", s.overdue);
    $("overdue").classList.toggle("alert", s.overdue > 0);
    setNumber("workers-alive", s.workers);
    const due = $("next-due");
    due.textContent = s.next_due ? `${s.next_due} (${relative(s.next_due, s.at)})` : "nothing waiting";
    for (const [key, id] of [["1m", "tp-1m"], ["5m", "tp-5m"], ["15m", "tp-15m"]]) {
      $(id).textContent = s.throughput[key].toFixed(2);
    }
    rates.push(s.throughput["1m"]);
    if (rates.length > SPARK_SAMPLES) rates.shift();
    drawSpark();
    const late = s.lateness_ms;
    $("lat-window").textContent = `started in the last ${duration(s.window_s)}`;
    for (const key of ["p50", "p99", "max"]) {
      $("lat-" + key).textContent = late[key] === null ? "-" : `${late[key].toFixed(3)} ms`;
    }
    setNumber("lat-n", late.n);
    drawHistogram(s.lateness_histogram);
    const rows = Object.entries(t.by_type).map(([type, c]) => [
      cell(type), cell(numbers.format(c.Waiting), "num"), cell(numbers.format(c.Claimed), "num"),
      cell(numbers.format(c.Complete), "num")]);
    fill("by-type", rows, 4, "");
  }

  function drawWorkers(workers) {
    const rows = workers.map((w) => [
      cell(w.id), cell(w.version), cell(w.started_at), cell(w.last_seen),
      cell(numbers.format(w.in_flight), "num"), cell(numbers.format(w.ran), "num")]);
    fill("workers-body", rows, 6, "No worker is running.");
  }

  function drawTasks(tasks) {
    const rows = tasks.map((t) => [
      cell(String(t.id), "num"), cell(t.type), cell(t.status), cell(t.time),
      cell(t.completed_at || "-"), cell(t.worker || "-")]);
    fill("tasks-body", rows, 6, "No task matches.");
  }

  function drawSpark() {
    const svg = $("spark");
    const top = Math.max(...rates, 0);
    const step = rates.length > 1 ? 120 / (rates.length - 1) : 0;
    const points = rates.map((r, i) => `${(i * step).toFixed(1)},${(29 - (top > 0 ? r / top : 0) * 27).toFixed(1)}`);
    const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    line.setAttribute("points", points.join(" "));
    svg.replaceChildren(line);
  }

  function drawHistogram(h) {
    // Buckets up to the last one with any run (at least up to 10 ms).
    const box = $("histogram");
    const top = Math.max(...h.counts, 1);
    let shown = h.below_ms.indexOf(10) + 1;
    h.counts.forEach((n, i) => { if (n) shown = Math.max(shown, i + 1); });
    const parts = [];
    h.counts.slice(0, shown).forEach((n, i) => {
      const bound = h.below_ms[i];
      const label = bound === null ? `≥ ${ms(h.below_ms[i - 1])}` : `< ${ms(bound)}`;
      const bar = document.createElement("div");
      bar.className = n ? "bar" : "bar empty";
      bar.style.width = `${(n / top) * 100}%`;
      parts.push(span(label, "label"), wrap(bar), span(numbers.format(n), "num"));
    });
    box.replaceChildren(...parts);
  }

  // ------------------------------------------------------------------ token

  function askToken(message) {
    waitingForToken = true;
    $("board").hidden = true;
    $("token-form").hidden = false;
    $("token-error").hidden = !message;
    $("token-error").textContent = message;
    $("token-input").value = "";
    $("token-input").focus();
    setStatus("waiting for the API token", false);
  }

  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    token = $("token-input").value.trim();
    localStorage.setItem(TOKEN_KEY, token);
    $("token-form").hidden = true;
    $("sign-out").hidden = false;
    waitingForToken = false;
    refresh();
  });

  $("sign-out").addEventListener("click", () => {
    localStorage.removeItem(TOKEN_KEY);
    token = null;
    $("sign-out").hidden = true;
    refresh();
  });

  $("filters").addEventListener("change", () => { if (!waitingForToken) refresh(); });
  $("filters").addEventListener("submit", (event) => event.preventDefault());

  // ------------------------------------------------------------------ helpers

  function setStatus(text, bad) {
    $("status").textContent = text;
    $("status").classList.toggle("error", bad);
  }

  function setNumber(id, value) {
    $(id).textContent = numbers.format(value);
  }

  function cell(text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    return td;
  }

  function span(text, className) {
    const el = document.createElement("span");
    el.textContent = text;
    el.className = className;
    return el;
  }

  function wrap(child) {
    const el = document.createElement("div");
    el.append(child);
    return el;
  }

  function fill(id, rows, columns, empty) {
    const body = $(id);
    if (!rows.length && empty) {
      const td = cell(empty, "empty");
      td.colSpan = columns;
      rows = [[td]];
    }
    body.replaceChildren(...rows.map((cells) => {
      const tr = document.createElement("tr");
      tr.append(...cells);
      return tr;
    }));
  }

  function relative(when, now) {
    const seconds = Math.round((Date.parse(when) - Date.parse(now)) / 1000);
    if (seconds === 0) return "now";
    return seconds > 0 ? `in ${duration(seconds)}` : `${duration(-seconds)} ago`;
  }

  function duration(seconds) {
    if (seconds < 60) return `${Math.round(seconds)} s`;
    if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
    if (seconds < 86400) return `${(seconds / 3600).toFixed(1)} h`;
    return `${(seconds / 86400).toFixed(1)} d`;
  }

  function ms(value) {
    return value >= 1000 ? `${value / 1000} s` : `${value} ms`;
  }

  function clock(date) {
    return date.toTimeString().slice(0, 8);
  }

  if (token) $("sign-out").hidden = false;
  refresh();
})();
