// Shared chart helpers for the run and compare pages (Plotly, served from the plotly package).
"use strict";

const FL = {
  palette: ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"],
  statusColors: { trained: "#2e7d32", kept: "#f2a900", absent: "#c7c7c7", failed: "#c62828" },
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

  plot(id, traces, layout) {
    const el = document.getElementById(id);
    if (!el) return;
    const hasData = traces.some((t) => (t.x || []).some((v) => v !== null) || (t.z || []).length);
    el.hidden = !hasData;  // an empty chart only shows meaningless axes
    if (hasData) Plotly.react(el, traces, layout, FL.config);
  },

  async json(url, options) {
    const response = await fetch(url, options);
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
