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
      const input = form.elements[name];
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
  form.addEventListener("input", schedule);
  form.addEventListener("change", schedule);
  toggle();
  preview().catch(() => {});
})();
