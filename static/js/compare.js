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
})().catch((e) => console.warn("compare charts:", e.message));
