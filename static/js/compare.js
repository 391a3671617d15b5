// Compare page: overlay the global test metrics and final ROC curves of the chosen runs.
"use strict";

(async () => {
  const ids = document.getElementById("compare-charts").dataset.runs.split(",").filter(Boolean);
  const rows = [...document.querySelectorAll("#compare-table tbody tr")];
  const label = (row) => `${FL.plain(FL.shorten(row.dataset.experiment))} · ${row.dataset.kind}`;
  const names = Object.fromEntries(rows.map((r) => [r.dataset.runId, label(r)]));
  await new Promise((resolve) => (document.readyState === "complete" ? resolve() : window.addEventListener("load", resolve)));
  const runs = await Promise.all(ids.map((id) => FL.json(`/api/runs/${id}/rounds`)));
  const longest = Math.max(1, ...runs.map((data) => data.rounds.length));
  for (const [key, label, unitText] of [["loss", "Test loss", "binary cross-entropy"], ["accuracy", "Test accuracy", "share correct"], ["auc", "Test AUC", "area under the ROC curve"]]) {
    const traces = runs.map((data, i) => ({ ...FL.series(data.rounds, `test.${key}`), mode: "lines+markers", name: names[ids[i]], line: { color: FL.palette[i % 10], dash: data.run.kind === "centralized" ? "dash" : "solid" } }));
    FL.plot(`cmp-${key}`, traces, FL.layout(`${label} on the common test set`, "round (centralized: epoch)", unitText, {}, longest));
  }
  const rocs = await Promise.all(ids.map((id, i) => (runs[i].rounds.length ? FL.json(`/api/runs/${id}/roc`) : null)));
  const traces = [FL.chanceLine()];
  rocs.forEach((roc, i) => { if (roc) traces.push(FL.rocTrace(roc, names[ids[i]], FL.palette[i % 10])); });
  FL.plot("cmp-roc", traces, FL.layout("Final ROC curves", "false positive rate (1 − specificity)", "true positive rate (sensitivity)",
    { xaxis: { title: { text: "false positive rate (1 − specificity)" }, range: [0, 1] }, yaxis: { title: { text: "true positive rate (sensitivity)" }, range: [0, 1.02] } }));
  frontierChart(rows, names);
})().catch((e) => console.warn("compare charts:", e.message));

// The privacy-utility frontier: final AUC against final epsilon on a log axis; a run without DP has no bound
// (epsilon infinite), so it sits in a column of its own at the right edge.
function frontierChart(rows, names) {
  const scored = rows.filter((r) => r.dataset.auc !== "");
  const dp = scored.filter((r) => r.dataset.epsilon !== "");
  if (!dp.length) return;
  const epsilons = dp.map((r) => Number(r.dataset.epsilon));
  const edge = Math.max(...epsilons) * 4;
  const point = (r) => ({ x: r.dataset.epsilon === "" ? edge : Number(r.dataset.epsilon), y: Number(r.dataset.auc), text: names[r.dataset.runId] });
  const trace = (list, name, symbol, color) => ({
    x: list.map((r) => point(r).x), y: list.map((r) => point(r).y), text: list.map((r) => point(r).text), name,
    mode: "markers+text", textposition: "top center", marker: { size: 11, symbol, color }, cliponaxis: false,
    hovertemplate: "%{text}<br>epsilon %{x:.3g}<br>AUC %{y:.3f}<extra></extra>",
  });
  const open = scored.filter((r) => r.dataset.epsilon === "");
  const traces = [trace(dp, "with differential privacy", "circle", FL.palette[0])];
  if (open.length) traces.push({ ...trace(open, "no DP (epsilon = ∞)", "triangle-right", FL.palette[1]), hovertemplate: "%{text}<br>no DP<br>AUC %{y:.3f}<extra></extra>" });
  const low = Math.log10(Math.min(...epsilons) / 2);
  FL.plot("cmp-frontier", traces, FL.layout("Final AUC against final epsilon (lower epsilon: more private)", "epsilon (log scale)", "AUC on the common test set", {
    xaxis: { title: { text: "epsilon (log scale)" }, type: "log", range: [low, Math.log10(edge * 2)] },
  }));
}
