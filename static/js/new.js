// New-experiment form: show only the fields that apply, and a live YAML/JSON preview with errors per field.
"use strict";

(() => {
  const form = document.getElementById("experiment-form");
  const yamlBox = document.getElementById("preview-yaml");
  const jsonBox = document.getElementById("preview-json");
  let timer = null;

  function toggle() {
    for (const block of form.querySelectorAll("[data-show-when]")) {
      const [, name, op, value] = block.dataset.showWhen.match(/^([\w.]+)(!?=)(.+)$/);
      const current = form.elements[name].value;
      block.hidden = op === "=" ? current !== value : current === value;
    }
  }

  function showErrors(errors) {
    for (const note of form.querySelectorAll("[data-live-error]")) note.remove();
    for (const input of form.querySelectorAll("[aria-invalid]")) if (!input.closest(".invalid")) input.removeAttribute("aria-invalid");
    for (const [name, message] of Object.entries(errors)) {
      const input = form.elements[name] ?? document.getElementById(name);  // the site list is not one input
      if (!input || input.closest(".invalid")) continue;
      const note = document.createElement("p");
      note.className = "error"; note.dataset.liveError = name; note.id = `${name}-live`; note.textContent = message;
      input.insertAdjacentElement("afterend", note);
      input.setAttribute("aria-invalid", "true");
    }
  }

  async function preview() {
    const response = await fetch("/experiments/preview", { method: "POST", body: new FormData(form) });
    const data = await response.json();
    yamlBox.textContent = data.yaml;
    jsonBox.textContent = data.json;
    showErrors(data.errors);
  }

  function schedule() { toggle(); clearTimeout(timer); timer = setTimeout(() => preview().catch(() => {}), 250); }

  for (const tab of document.querySelectorAll("[role=tab]")) {
    tab.addEventListener("click", () => {
      for (const other of document.querySelectorAll("[role=tab]")) other.setAttribute("aria-selected", String(other === tab));
      yamlBox.hidden = tab.id !== "tab-yaml"; jsonBox.hidden = tab.id !== "tab-json";
    });
  }
  document.getElementById("copy-preview").addEventListener("click", () => {
    const text = yamlBox.hidden ? jsonBox.textContent : yamlBox.textContent;
    navigator.clipboard?.writeText(text).catch(() => {});
  });
  const checkPanel = document.getElementById("data-check");
  const counts = (byClass) => Object.entries(byClass).map(([cls, n]) => `${n.toLocaleString("en")} ${cls}`).join(", ");

  function showCheck(check) {
    const lines = document.getElementById("data-check-lines");
    const thumbs = document.getElementById("data-check-thumbnails");
    lines.replaceChildren(); thumbs.replaceChildren();
    const add = (text) => { const li = document.createElement("li"); li.textContent = text; lines.append(li); };
    for (const [name, source] of Object.entries(check.sources)) {
      const sizes = Object.entries(source.sizes).slice(0, 3).map(([size, n]) => `${size} (${n})`).join(", ");
      add(`${name}: ${counts(source.classes)}; sizes ${sizes}; ${Object.keys(source.bit_depths).join("/")}-bit`);
      for (const [reason, n] of Object.entries(source.skipped)) add(`${n} file(s) skipped: ${reason}`);
    }
    add(`common test set: ${counts(check.test)}`);
    for (const client of check.clients) add(`client ${client.id}: train ${counts(client.train)}; validation ${counts(client.validation)}; own test ${counts(client.test)}`);
    for (const thumb of check.thumbnails) {
      const figure = document.createElement("figure");
      const img = document.createElement("img"); img.src = thumb.png; img.alt = `a ${thumb.label} training image`;
      const caption = document.createElement("figcaption"); caption.textContent = thumb.label;
      figure.append(img, caption); thumbs.append(figure);
    }
  }

  async function checkData() {
    const status = document.getElementById("data-check-status");
    checkPanel.hidden = false; status.textContent = "Reading the data on a worker…";
    const response = await fetch("/experiments/check", { method: "POST", body: new FormData(form) });
    const data = await response.json();
    const { config, ...perField } = data.errors;
    showErrors(perField);
    document.getElementById("data-check-lines").replaceChildren();
    document.getElementById("data-check-thumbnails").replaceChildren();
    if (data.check && data.check.ok) { status.textContent = "The data loads and splits as shown."; showCheck(data.check); }
    else status.textContent = config || "The data has problems: see the fields marked in the form.";
  }

  document.getElementById("check-data").addEventListener("click", () => checkData().catch(() => {}));
  // After a refused submit, start at the error summary; its links move to the field itself, not just its label.
  const summary = document.getElementById("form-errors");
  if (summary) {
    summary.focus();
    for (const link of summary.querySelectorAll("a[data-field]")) {
      link.addEventListener("click", (e) => { const input = form.elements[link.dataset.field]; if (input) { e.preventDefault(); input.focus(); } });
    }
  }
  form.addEventListener("input", schedule);
  form.addEventListener("change", schedule);
  toggle();
  preview().catch(() => {});
})();
