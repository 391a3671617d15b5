// Grad-CAM galleries: one run's on the run page, several runs side by side on the compare page.
"use strict";

(() => {
  const CATEGORIES = [["TP", "True positives"], ["TN", "True negatives"], ["FP", "False positives"], ["FN", "False negatives"]];
  const POLL_MS = 2000;
  const MAX_POLLS = 90;  // three minutes, then the page says that no worker seems to answer

  function el(tag, attrs = {}, children = []) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (key === "text") node.textContent = value; else node.setAttribute(key, value);
    }
    for (const child of children) node.append(child);
    return node;
  }

  async function fetchJson(url, options) {
    const response = await fetch(url, options);
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(typeof body.detail === "string" ? body.detail : `${response.status} ${response.statusText}`);
    return body;
  }

  const galleryUrl = (runId, round) => `/api/runs/${runId}/gradcam${round ? `?round=${round}` : ""}`;

  function figure(runId, item, size) {
    const p = Number(item.probability).toFixed(3);
    const caption = `test image ${item.index}: label ${item.label}, predicted ${item.prediction}, p(PNEUMONIA) ${p}`;
    const src = `/api/runs/${runId}/gradcam/${encodeURIComponent(item.file)}`;
    return el("figure", { class: "gradcam-item", "data-category": item.category }, [
      el("a", { href: src, title: "open the full-size heat map" }, [
        el("img", { src, width: size, height: size, loading: "lazy", alt: `Grad-CAM heat map of ${caption}` }),
      ]),
      el("figcaption", {}, [
        el("span", { class: `badge gradcam-${item.category}`, text: item.category }), ` ${item.label} → ${item.prediction}`,
        el("br"), `p(PNEUMONIA) ${p} · image ${item.index}`,
      ]),
    ]);
  }

  function describe(gallery) {
    if (gallery.status === "pending") return `Computing the gallery of round ${gallery.round}…`;
    if (gallery.status === "failed") return `The gallery of round ${gallery.round} could not be computed: ${gallery.error}`;
    if (gallery.status === "missing") return gallery.round ? `Round ${gallery.round} has no gallery yet.` : "No gallery has been computed for this run yet.";
    const counts = CATEGORIES.map(([c]) => `${gallery.counts[c] ?? 0} ${c}`).join(", ");
    return `Round ${gallery.round}: ${counts} among ${gallery.candidates} test images; layer ${gallery.layer} (${(gallery.map_size || []).join("×")} cells), threshold ${gallery.threshold}.`;
  }

  // The run page: one gallery, a round picker, and a form that asks a worker for another round.
  function runPage(section) {
    const runId = section.dataset.runId;
    const note = document.getElementById("gradcam-note");
    const picker = document.getElementById("gradcam-round");
    const grid = document.getElementById("gradcam-gallery");
    let runStatus = section.dataset.status, shown = null, timer = null, polls = 0;

    function show(gallery) {
      shown = gallery.round;
      picker.replaceChildren(...gallery.rounds.map((n) => el("option", { value: n, text: String(n) })));
      if (gallery.round) picker.value = gallery.round;
      picker.disabled = !gallery.rounds.length;
      note.hidden = false;
      note.textContent = describe(gallery);
      if (gallery.status === "missing" && !gallery.round && runStatus !== "succeeded") {
        note.textContent = "The gallery of the final model is computed when the run succeeds; a completed round can be explained now.";
      }
      grid.replaceChildren(...(gallery.status !== "ready" ? [] : CATEGORIES.map(([category, title]) => {
        const items = gallery.items.filter((i) => i.category === category);
        return el("div", { class: "gradcam-category" }, [
          el("h3", { text: `${title} (${category})` }),
          items.length ? el("div", { class: "gradcam-row" }, items.map((i) => figure(runId, i, 224)))
            : el("p", { class: "muted", text: `None among the test images predicted.` }),
        ]);
      })));
    }

    async function load(round) {
      clearTimeout(timer);
      const gallery = await fetchJson(galleryUrl(runId, round));
      show(gallery);
      const waiting = gallery.status === "pending" || (gallery.status === "missing" && round);
      if (waiting && polls < MAX_POLLS) { polls += 1; timer = setTimeout(() => load(round).catch(fail), POLL_MS); }
      else if (waiting) note.textContent = `${describe(gallery)} Still not ready after three minutes: its worker may have stopped. Compute asks a worker of the check queue (fedlens worker -Q check).`;
    }

    function fail(error) { note.hidden = false; note.textContent = `Could not load the gallery: ${error.message}`; }

    picker.addEventListener("change", () => { polls = 0; load(Number(picker.value)).catch(fail); });
    document.getElementById("gradcam-request").addEventListener("submit", async (event) => {
      event.preventDefault();
      const round = Number(document.getElementById("gradcam-request-round").value);
      try {
        const token = document.querySelector('meta[name="csrf-token"]')?.content ?? "";
        await fetchJson(`/api/runs/${runId}/gradcam?round=${round}`, { method: "POST", headers: { "X-CSRF-Token": token } });
        polls = 0;
        await load(round);
      } catch (error) { note.hidden = false; note.textContent = `Could not explain round ${round}: ${error.message}`; }
    });
    // run.js updates the status badge live; the final gallery follows a run that just succeeded.
    const badge = document.getElementById("status");
    if (badge) {
      new MutationObserver(() => {
        const now = badge.textContent.trim();
        if (now !== runStatus) { runStatus = now; if (now === "succeeded") { polls = 0; load(shown).catch(fail); } }
      }).observe(badge, { childList: true, subtree: true, characterData: true });
    }
    load(null).catch(fail);
  }

  // The compare page: one column per run, one row per category, so the same kind of case sits side by side.
  async function comparePage(section) {
    const ids = section.dataset.runs.split(",").filter(Boolean);
    const names = Object.fromEntries([...document.querySelectorAll("#compare-table tbody tr")].map((r) => [r.dataset.runId, r.querySelector("th a").textContent]));
    const galleries = await Promise.all(ids.map((id) => fetchJson(galleryUrl(id)).catch((e) => ({ status: "failed", error: e.message, items: [] }))));
    const head = section.querySelector("thead tr");
    ids.forEach((id, i) => {
      const g = galleries[i];
      head.append(el("th", { scope: "col" }, [el("a", { href: `/runs/${id}`, text: names[id] || id }), el("br"),
        el("span", { class: "muted small", text: g.status === "ready" ? `round ${g.round}` : describe(g) })]));
    });
    section.querySelector("tbody").replaceChildren(...CATEGORIES.map(([category, title]) => el("tr", {}, [
      el("th", { scope: "row", text: `${title} (${category})` }),
      ...ids.map((id, i) => {
        const items = galleries[i].items.filter((item) => item.category === category);
        return el("td", {}, [items.length ? el("div", { class: "gradcam-row" }, items.map((item) => figure(id, item, 128)))
          : el("span", { class: "muted", text: galleries[i].status === "ready" ? "none" : "–" })]);
      }),
    ])));
  }

  window.addEventListener("DOMContentLoaded", () => {
    const run = document.getElementById("gradcam");
    if (run) runPage(run);
    const compare = document.getElementById("gradcam-compare");
    if (compare) comparePage(compare).catch((e) => console.warn("Grad-CAM galleries:", e.message));
  });
})();
