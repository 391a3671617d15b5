// Shared chart helpers for the run and compare pages (Plotly, served from the plotly package).
"use strict";

const FL = {
  palette: ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"],
  // A client's state in one round: its status, and for an absent client where the join/leave schedule puts it.
  states: [
    ["trained", "trained", "#2e7d32"],
    ["kept", "kept (last weights count)", "#f2a900"],
    ["failed", "failed (training error)", "#c62828"],
    ["not-joined", "not joined yet", "#b9d7f0"],
    ["left", "left", "#8a8f96"],
    ["no-answer", "did not answer", "#b56fcf"],
  ],
  // Two more states of a run over hospital sites, shown only there.
  siteStates: [
    ["late", "late (no answer by the round timeout)", "#e57c23"],
    ["offline", "offline (no heartbeats)", "#5c6670"],
  ],
  config: { responsive: true, displaylogo: false, modeBarButtonsToRemove: ["select2d", "lasso2d"] },

  // Rounds are whole numbers: ticks at integers only, thinned out for long runs.
  layout(title, xTitle, yTitle, extra = {}, rounds = 10) {
    return Object.assign({
      title: { text: title, font: { size: 15 } },
      xaxis: { title: { text: xTitle }, zeroline: false, dtick: Math.max(1, Math.ceil(rounds / 12)), tick0: 0 },
      yaxis: { title: { text: yTitle }, zeroline: false, automargin: true },
      margin: { l: 64, r: 20, t: 48, b: 96 },
      legend: { orientation: "h", y: -0.3, yanchor: "top" },
      height: 340,
      font: { family: "system-ui, sans-serif", size: 12 },
    }, extra);
  },

  // Draws into the plot element inside a chart card; the card is hidden while there is nothing to draw, since an
  // empty chart only shows meaningless axes. The element gets the chart's height: on a window resize Plotly's
  // responsive mode drops layout.height and sizes the chart to its element, which would otherwise be 0 px tall.
  plot(id, traces, layout) {
    const el = document.getElementById(id);
    if (!el) return;
    const hasData = traces.some((t) => (t.x || []).some((v) => v !== null) || (t.z || []).length);
    (el.closest(".chart") || el).hidden = !hasData;
    if (!hasData) return;
    if (layout.height) el.style.height = `${layout.height}px`;
    Plotly.react(el, traces, layout, FL.config);
  },

  // Plotly reads tags and entities in names, titles and hover text; user text (experiment names, descriptions)
  // must show as written, so its markup characters become entities.
  plain(text) {
    return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  },

  // Plotly never wraps a legend entry: a long name would run past the chart's edge.
  shorten(text, max = 40) {
    return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
  },

  // State-changing requests carry the session's CSRF token (base.html puts it in a meta tag).
  withCsrf(options = {}) {
    const token = document.querySelector('meta[name="csrf-token"]')?.content ?? "";
    return { ...options, headers: { ...(options.headers ?? {}), "X-CSRF-Token": token } };
  },

  async json(url, options) {
    const response = await fetch(url, options && options.method && options.method !== "GET" ? FL.withCsrf(options) : options);
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      throw new Error(typeof body.detail === "string" ? body.detail : `${response.status} ${response.statusText}`);
    }
    return response.json();
  },

  fmt(value, digits = 3) {
    return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
  },

  // Round-by-round values of one global metric; rounds without it are skipped.
  series(rounds, key) {
    const xs = [], ys = [];
    for (const r of rounds) {
      if (r.metrics[key] !== null && r.metrics[key] !== undefined) { xs.push(r.number); ys.push(r.metrics[key]); }
    }
    return { x: xs, y: ys };
  },

  rocTrace(roc, name, color, dash = "solid") {
    return { x: roc.fpr, y: roc.tpr, mode: "lines", name: `${name} (AUC ${FL.fmt(roc.auc)})`, line: { color, dash } };
  },

  chanceLine() {
    return { x: [0, 1], y: [0, 1], mode: "lines", name: "chance", line: { color: "#999", dash: "dot", width: 1 }, hoverinfo: "skip" };
  },
};
