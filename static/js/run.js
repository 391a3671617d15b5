// Run page: load the rounds from the REST API, then follow the run live over server-sent events.
"use strict";

(() => {
  const root = document.getElementById("run");
  const runId = root.dataset.runId;
  const kind = root.dataset.kind;
  const federated = kind === "federated";
  const centralId = root.dataset.centralId;
  const total = Number(root.dataset.total);
  const unit = federated ? "round" : "epoch";
  const state = { run: null, rounds: [], central: [], rocRound: null, rocCalls: 0 };
  const layout = (title, x, y, extra = {}) => FL.layout(title, x, y, extra, total);
  const finished = (status) => ["succeeded", "failed", "cancelled"].includes(status);
  // A run over hospital sites names its clients: client "1" is the config's first site.
  const siteNames = JSON.parse(root.dataset.clientNames || "{}");
  const clientLabel = (id) => siteNames[id] || `client ${id}`;
  const overSites = Object.keys(siteNames).length > 0;
  const states = overSites ? [...FL.states, ...FL.siteStates] : FL.states;
  const dpLevel = root.dataset.dpLevel;
  const targetEpsilon = root.dataset.targetEpsilon === "" ? null : Number(root.dataset.targetEpsilon);

  function clientIds() {
    const ids = new Set();
    for (const r of state.rounds) for (const c of r.clients) ids.add(c.id);
    return [...ids].sort((a, b) => a.length - b.length || a.localeCompare(b));
  }

  function globalCharts() {
    for (const [key, label, unitText] of [["loss", "Test loss", "binary cross-entropy"], ["accuracy", "Test accuracy", "share correct"], ["auc", "Test AUC", "area under the ROC curve"]]) {
      const fed = FL.series(state.rounds, `test.${key}`);
      const traces = [{ ...fed, mode: "lines+markers", name: kind === "federated" ? "federated" : "centralized", line: { color: FL.palette[0] } }];
      if (state.central.length) {
        traces.push({ ...FL.series(state.central, `test.${key}`), mode: "lines+markers", name: "centralized (per epoch)", line: { color: FL.palette[1], dash: "dash" } });
      }
      FL.plot(`chart-${key}`, traces, layout(`${label} on the common test set`, kind === "federated" ? "round (centralized: epoch)" : "epoch", unitText));
    }
  }

  // One client's metric per round (the centralized run has one "client": all the training data).
  function clientSeries(id, key) {
    const xs = [], ys = [];
    for (const r of state.rounds) {
      const c = r.clients.find((x) => x.id === id);
      const v = c && c.metrics[key];
      if (v !== undefined && v !== null) { xs.push(r.number); ys.push(v); }
    }
    return { x: xs, y: ys };
  }

  function clientCharts() {
    for (const [key, label] of [["loss", "loss (binary cross-entropy)"], ["accuracy", "accuracy (share correct)"]]) {
      const traces = [];
      clientIds().forEach((id, i) => {
        for (const [prefix, dash, what] of [["train", "solid", "train"], ["test", "dash", "own test"]]) {
          const series = clientSeries(id, `${prefix}.${key}`);
          if (series.x.length) traces.push({ ...series, mode: "lines+markers", name: `${clientLabel(id)} ${what}`, line: { color: FL.palette[i % 10], dash }, marker: { size: 5 } });
        }
      });
      FL.plot(`chart-client-${key}`, traces, layout(`Per-client ${key}: train (solid) and own test set (dashed)`, unit, label));
    }
  }

  // The centralized run: the one model on the training data it learns from and on the common test set.
  function fitCharts() {
    const data = clientIds()[0];
    for (const [key, label, unitText] of [["loss", "Loss", "binary cross-entropy"], ["accuracy", "Accuracy", "share correct"]]) {
      FL.plot(`chart-fit-${key}`, [
        { ...clientSeries(data, `train.${key}`), mode: "lines+markers", name: "training data", line: { color: FL.palette[0] } },
        { ...FL.series(state.rounds, `test.${key}`), mode: "lines+markers", name: "common test set", line: { color: FL.palette[0], dash: "dash" } },
      ], layout(`${label} per epoch: training data and common test set`, "epoch", unitText));
    }
  }

  // An absent client has not joined yet, has left, or was a member that did not answer: three facts, three states.
  // Over sites, a failure at the timeout is a late site, and one at the round's start or of the heartbeats during it
  // an offline site (the messages of worker/site_executor.py; app/sites/panel.py reads them the same way).
  function cellState(client) {
    const error = overSites && client.status === "failed" ? client.error ?? "" : "";
    if (error.includes("did not answer")) return "late";
    if (error.includes("was offline when round") || error.includes("went offline during round")) return "offline";
    if (client.status !== "absent") return client.status;
    return client.presence === "present" ? "no-answer" : client.presence;
  }

  function timelineChart() {
    if (!document.getElementById("chart-timeline")) return;
    const ids = clientIds(), order = states.map(([s]) => s), names = Object.fromEntries(states);
    const cells = ids.map((id) => state.rounds.map((r) => r.clients.find((x) => x.id === id)));
    const z = cells.map((row) => row.map((c) => (c ? order.indexOf(cellState(c)) : null)));
    const text = cells.map((row, i) => row.map((c, j) => (c ? `${clientLabel(ids[i])}, round ${state.rounds[j].number}: ${names[cellState(c)]}${c.event ? ` (${c.event} this round)` : ""}` : "")));
    const colorscale = states.flatMap(([, , color], i) => [[i / order.length, color], [(i + 1) / order.length, color]]);
    const traces = [{ type: "heatmap", x: state.rounds.map((r) => r.number), y: ids.map(clientLabel), z, text, hoverinfo: "text",
      zmin: -0.5, zmax: order.length - 0.5, colorscale, xgap: 2, ygap: 2, showscale: false, name: "status" }];
    for (const [, name, color] of states) traces.push({ x: [null], y: [null], mode: "markers", marker: { color, symbol: "square", size: 12 }, name });
    for (const [event, symbol, name] of [["joined", "triangle-right", "joins here"], ["left", "x", "leaves here"]]) {
      const xs = [], ys = [];
      for (const r of state.rounds) for (const c of r.clients) if (c.event === event) { xs.push(r.number); ys.push(clientLabel(c.id)); }
      traces.push({ x: xs, y: ys, mode: "markers", name, marker: { symbol, size: 13, color: "#000", line: { width: 2 } } });
    }
    const approach = root.dataset.approach === "keep-last" ? "approach 2, keep last weights" : "approach 1, drop departed clients";
    // Eight legend entries take up to three lines on a narrow window: the legend starts a fixed 56 px below the
    // plot (clear of the axis title), whatever the number of clients, in a bottom margin that holds three lines.
    const yTitle = overSites ? "site" : "client";
    const height = Math.max(320, 180 + 32 * ids.length), margin = { l: 64, r: 20, t: 48, b: 130 };
    FL.plot("chart-timeline", traces, layout(`${overSites ? "Site" : "Client"} participation (${approach})`, "round", yTitle, {
      yaxis: { title: { text: yTitle }, autorange: "reversed", type: "category", automargin: true }, height, margin,
      legend: { orientation: "h", y: -56 / (height - margin.t - margin.b), yanchor: "top" },
    }));
  }

  function timingCharts() {
    const xs = state.rounds.map((r) => r.number);
    const parts = federated
      ? [["startup_s", "start-up (a worker's first task)"], ["train_s", "slowest client"], ["calibration_s", "BatchNorm pass"], ["aggregation_s", "aggregation"], ["evaluation_s", "evaluation"]]
      : [["train_s", "training"], ["evaluation_s", "evaluation"]];
    const traces = parts.map(([key, name], i) => ({ type: "bar", x: xs, y: state.rounds.map((r) => r[key]), name, marker: { color: FL.palette[i] } }));
    traces.push({ x: xs, y: state.rounds.map((r) => r.wall_s), mode: "lines+markers", name: federated ? "wall (clients one after another here)" : "wall", line: { color: "#333" } });
    FL.plot("chart-timing", traces, layout(`Time per ${unit}`, unit, "seconds", { barmode: "stack" }));
    if (!federated) return;
    FL.plot("chart-bytes", [
      { type: "bar", x: xs, y: state.rounds.map((r) => r.bytes_sent / 1e6), name: "server → clients" },
      { type: "bar", x: xs, y: state.rounds.map((r) => r.bytes_received / 1e6), name: "clients → server" },
    ], layout("Traffic per round", "round", "megabytes"));
  }

  // The epsilon spent up to each round against the target; at sample level each site has its own (its data and
  // its sampling rate), and the run's epsilon is the largest of them.
  function epsilonChart() {
    const dp = state.rounds.filter((r) => r.privacy);
    const xs = dp.map((r) => r.number);
    const traces = [{ x: xs, y: dp.map((r) => r.privacy.epsilon), mode: "lines+markers", name: dpLevel === "sample" ? "run (largest of the sites)" : "run", line: { color: "#333" } }];
    if (dpLevel === "sample") {
      const ids = [...new Set(dp.flatMap((r) => Object.keys(r.privacy.sites)))].sort((a, b) => a.length - b.length || a.localeCompare(b));
      ids.forEach((id, i) => traces.push({ x: xs, y: dp.map((r) => r.privacy.sites[id] ?? null), mode: "lines+markers", name: clientLabel(id), line: { color: FL.palette[i % 10], dash: "dot" }, marker: { size: 5 } }));
    }
    // A target far above what has been spent would flatten every curve to the floor: keep the axis on the spend.
    const spent = Math.max(0, ...traces.flatMap((t) => t.y.filter((y) => y !== null)));
    const far = targetEpsilon !== null && spent > 0 && targetEpsilon > 4 * spent;
    if (targetEpsilon !== null && xs.length) {
      const name = far ? `target ${targetEpsilon} (above the axis)` : `target ${targetEpsilon}`;
      traces.push({ x: [Math.min(...xs, 1), Math.max(...xs, total)], y: [targetEpsilon, targetEpsilon], mode: "lines", name, line: { color: FL.palette[1], dash: "dash" }, hoverinfo: "skip" });
    }
    const delta = dp.length ? ` at delta ${dp[dp.length - 1].privacy.delta}` : "";
    const look = layout(`Epsilon spent up to each round (${dpLevel} level${delta})`, unit, "epsilon");
    if (far) look.yaxis = { ...look.yaxis, range: [0, 1.2 * spent] };
    FL.plot("chart-epsilon", traces, look);
  }

  // The latest round's curve, the picked round's and the baseline's; a call that a newer one overtook draws nothing.
  async function rocChart() {
    const call = ++state.rocCalls;
    const numbers = state.rounds.map((r) => r.number);
    if (!numbers.length) { FL.plot("chart-roc", [], {}); return; }
    const last = numbers[numbers.length - 1];
    const wanted = numbers.includes(state.rocRound) ? state.rocRound : last;
    const [latest, picked, central] = await Promise.all([
      FL.json(`/api/runs/${runId}/roc?round=${last}`),
      wanted !== last ? FL.json(`/api/runs/${runId}/roc?round=${wanted}`) : null,
      state.central.length ? FL.json(`/api/runs/${centralId}/roc`) : null,
    ]);
    if (call !== state.rocCalls) return;
    document.getElementById("roc-round").innerHTML = numbers.map((n) => `<option value="${n}" ${n === wanted ? "selected" : ""}>${n}${n === last ? " (latest)" : ""}</option>`).join("");
    const traces = [FL.chanceLine(), FL.rocTrace(latest, `final model, ${unit} ${last}`, FL.palette[0])];
    if (picked) traces.push(FL.rocTrace(picked, `${unit} ${wanted}`, FL.palette[2], "dash"));
    if (central) traces.push(FL.rocTrace(central, "centralized", FL.palette[1], "dot"));
    if (federated) {
      const shown = picked || latest;
      const own = shown.clients.map((c, i) => FL.rocTrace(c, clientLabel(c.id), FL.palette[i % 10]));
      FL.plot("chart-client-roc", [FL.chanceLine(), ...own], layout(`ROC on each client's own test set, ${unit} ${shown.round}`,
        "false positive rate (1 − specificity)", "true positive rate (sensitivity)",
        { xaxis: { title: { text: "false positive rate (1 − specificity)" }, range: [0, 1] }, yaxis: { title: { text: "true positive rate (sensitivity)" }, range: [0, 1.02] } }));
    }
    FL.plot("chart-roc", traces, layout("ROC curve on the common test set", "false positive rate (1 − specificity)", "true positive rate (sensitivity)",
      { xaxis: { title: { text: "false positive rate (1 − specificity)" }, range: [0, 1] }, yaxis: { title: { text: "true positive rate (sensitivity)" }, range: [0, 1.02] } }));
  }

  function clientTable() {
    const body = document.querySelector("#client-table tbody");
    const rows = clientIds().map((id) => {
      const seen = state.rounds.map((r) => r.clients.find((c) => c.id === id)).filter(Boolean);
      const trained = seen.filter((c) => c.status === "trained");
      const last = trained[trained.length - 1] || { metrics: {}, samples: seen.length ? seen[0].samples : 0 };
      const latest = seen[seen.length - 1];
      const status = latest ? latest.status : "–";
      const said = status === "absent" ? Object.fromEntries(states)[cellState(latest)] : status;  // e.g. "left"
      const train = [FL.fmt(last.metrics["train.loss"]), FL.fmt(last.metrics["train.accuracy"])];
      // the latest global model on this client's own test set, at that round's threshold (counts only left the client)
      const judged = seen.filter((c) => c.metrics["global.n_positive"] !== undefined);
      const g = judged.length ? judged[judged.length - 1].metrics : {};
      const own = g["global.n_negative"] !== undefined ? `${g["global.n_negative"]} / ${g["global.n_positive"]}` : "–";
      const cells = federated
        ? [`<th scope="row">${clientLabel(id)}</th>`, last.samples ?? "–", trained.length, `<span class="badge status-${status}">${said}</span>`,
          FL.fmt(last.metrics["test.loss"]), FL.fmt(last.metrics["test.accuracy"]), ...train, own,
          `${FL.fmt(g["global.sensitivity"])} / ${FL.fmt(g["global.specificity"])}`, FL.fmt(g["global.auc"])]
        : ['<th scope="row">all training data</th>', last.samples ?? "–", trained.length, ...train];
      return `<tr>${cells.map((c, i) => (i ? `<td>${c}</td>` : c)).join("")}</tr>`;
    });
    const columns = document.querySelectorAll("#client-table thead th").length;
    body.innerHTML = rows.join("") || `<tr><td colspan="${columns}" class="muted">No ${unit} has finished yet.</td></tr>`;
  }

  // The clinical metrics of each round's global model at its operating threshold, and the latest confusion matrix.
  function clinicalTable() {
    const shown = (r, key, digits = 3) => FL.fmt(r.metrics[`test.${key}`], digits);
    const count = (r, key) => (r.metrics[`test.${key}`] ?? "–");
    document.querySelector("#metrics-table tbody").innerHTML = state.rounds.map((r) => {
      const ci = r.metrics["test.auc_ci_low"] != null ? ` <span class="ci">(${shown(r, "auc_ci_low", 2)}–${shown(r, "auc_ci_high", 2)})</span>` : "";
      const cells = [shown(r, "threshold"), shown(r, "accuracy"), shown(r, "sensitivity"), shown(r, "specificity"), shown(r, "precision"),
        shown(r, "f1"), `${shown(r, "auc")}${ci}`, ...["tn", "fp", "fn", "tp"].map((k) => count(r, k))];
      return `<tr><th scope="row">${r.number}</th>${cells.map((c) => `<td>${c}</td>`).join("")}</tr>`;
    }).join("");
    const last = state.rounds[state.rounds.length - 1];
    if (!last) return;
    const cell = (key) => count(last, key);
    document.getElementById("confusion-caption").textContent =
      `${unit} ${last.number}, threshold ${shown(last, "threshold")}: ${cell("n_negative")} NORMAL and ${cell("n_positive")} PNEUMONIA test images`;
    document.querySelector("#confusion tbody").innerHTML =
      `<tr><th scope="row">NORMAL</th><td>${cell("tn")}</td><td>${cell("fp")}</td></tr>` +
      `<tr><th scope="row">PNEUMONIA</th><td>${cell("fn")}</td><td>${cell("tp")}</td></tr>`;
  }

  function progress() {
    const done = state.rounds.length ? state.rounds[state.rounds.length - 1].number : 0;
    document.getElementById("progress").value = done;
    let text = `${done} of ${total} ${unit}s`;
    if (state.run && state.run.status === "running" && done > 0 && done < total) {
      const mean = state.rounds.reduce((s, r) => s + r.wall_s, 0) / state.rounds.length;
      const eta = Math.round(mean * (total - done));
      text += ` · about ${eta < 120 ? `${eta} s` : `${Math.round(eta / 60)} min`} left`;
    }
    if (state.run && state.run.cancel_requested && state.run.status === "running") text += " · cancelling…";
    document.getElementById("progress-text").textContent = text;
    document.getElementById("empty").hidden = done > 0;
    document.getElementById("clinical").hidden = done === 0;
    if (!state.run) return;
    const shown = state.run.cancel_requested && state.run.status === "running" ? "cancelling" : state.run.status;
    for (const line of document.querySelectorAll("[data-empty-when]")) line.hidden = line.dataset.emptyWhen !== shown;
  }

  function showRun(run) {
    state.run = run;
    document.getElementById("status").innerHTML = `<span class="badge status-${run.status}">${run.status}</span>`;
    document.getElementById("cancel").hidden = finished(run.status);
    document.getElementById("resume").hidden = !["failed", "cancelled"].includes(run.status);
    document.getElementById("model-link").hidden = !run.has_model;
    document.getElementById("error").hidden = !run.error;
    document.getElementById("error-text").textContent = run.error || "";
    document.getElementById("note").hidden = !run.note;
    document.getElementById("note-text").textContent = run.note || "";
    progress();
  }

  function render() {
    globalCharts();
    if (federated) { clientCharts(); timelineChart(); } else fitCharts();
    timingCharts(); clientTable(); clinicalTable(); progress();
    if (dpLevel) epsilonChart();
    rocChart().catch((e) => console.warn("ROC:", e.message));
  }

  // The per-site panel is rendered by the server: fetch it again every few seconds while the run is open, so that
  // what each site is doing now, and each new round's states, show without a reload.
  const SITE_PANEL_S = 5;
  async function refreshSites() {
    const panel = document.getElementById("site-panel");
    if (!panel || document.hidden) return;
    const response = await fetch(`/runs/${runId}/site-panel`, { headers: { Accept: "text/html" } });
    if (response.ok) panel.outerHTML = await response.text();
  }

  async function addSite(form) {
    const [site, dataset] = form.elements.choice.value.split("/");
    const said = document.getElementById("add-site-result");
    try {
      const joined = await FL.json(`/api/runs/${runId}/sites`, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ site, dataset }),
      });
      said.textContent = `${site} joins as client ${joined.client} from round ${joined.joins}`;
      siteNames[String(joined.client)] = site;
      setTimeout(() => refreshSites().catch(() => {}), 1500);
    } catch (e) { said.textContent = `Could not add ${site}: ${e.message}`; }
  }

  function follow(id, since, onRound, onStatus) {
    const source = new EventSource(`/api/runs/${id}/events?since=${since}`);
    source.addEventListener("round", (e) => onRound(JSON.parse(e.data)));
    source.addEventListener("status", (e) => onStatus(JSON.parse(e.data)));
    source.addEventListener("end", () => source.close());
    return source;
  }

  async function action(name) {
    try { showRun(await FL.json(`/api/runs/${runId}/${name}`, { method: "POST" })); if (name === "resume") start(); }
    catch (e) { document.getElementById("progress-text").textContent = `Could not ${name}: ${e.message}`; }
  }

  async function start() {
    const data = await FL.json(`/api/runs/${runId}/rounds`);
    state.rounds = data.rounds;
    showRun(data.run);
    if (centralId) state.central = (await FL.json(`/api/runs/${centralId}/rounds`)).rounds;
    render();
    if (!finished(data.run.status) && overSites) {
      const timer = setInterval(() => {
        if (state.run && finished(state.run.status)) clearInterval(timer);
        refreshSites().catch((e) => console.warn("site panel:", e.message));
      }, SITE_PANEL_S * 1000);
    }
    if (!finished(data.run.status)) {
      const last = state.rounds.length ? state.rounds[state.rounds.length - 1].number : 0;
      follow(runId, last, (r) => { if (!state.rounds.some((x) => x.number === r.number)) { state.rounds.push(r); render(); } }, showRun);
    }
    if (centralId && state.central.length < 1000) {
      const lastCentral = state.central.length ? state.central[state.central.length - 1].number : 0;
      const onCentral = (r) => {
        if (state.central.some((x) => x.number === r.number)) return;
        state.central.push(r); globalCharts(); rocChart().catch((e) => console.warn("ROC:", e.message));
      };
      follow(centralId, lastCentral, onCentral, () => {});
    }
  }

  document.addEventListener("submit", (e) => { if (e.target.id === "add-site") { e.preventDefault(); addSite(e.target); } });
  document.getElementById("cancel").addEventListener("click", () => action("cancel"));
  document.getElementById("resume").addEventListener("click", () => action("resume"));
  document.getElementById("roc-round").addEventListener("change", (e) => { state.rocRound = Number(e.target.value); rocChart(); });
  window.addEventListener("load", () => start().catch((e) => { document.getElementById("progress-text").textContent = `Could not load the run: ${e.message}`; }));
})();
