// Small DOM helpers shared by the apps: element building, messages, tabs, tables.
import { t } from "./i18n.js";

/** h("button", {onclick, class: "x"}, "text", child...) */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** A message in the live region (screen readers announce it). */
export function notify(message, kind = "info", detail = "") {
  const box = document.getElementById("notice");
  if (!box) return;
  box.className = `notice ${kind}`;
  box.replaceChildren(h("span", {}, message), detail ? h("small", { class: "detail" }, detail) : "");
  box.hidden = false;
  clearTimeout(notify.timer);
  if (kind !== "error") notify.timer = setTimeout(() => { box.hidden = true; }, 6000);
}

/** Show an AppError (or any error) in the live region. */
export function showError(e) {
  notify(e.message || String(e), "error", e.detail || "");
}

/** Runs `Task/{id}/$operation` from a button: the button is disabled while it runs and again
 * usable when the server refuses, so the user can retry; `again` re-renders after success. */
export function taskRunner(api, taskId, again) {
  return async (operation, parameters, button) => {
    if (button) button.disabled = true;
    try {
      await api.operation(`Task/${taskId}/$${operation}`, parameters);
      notify(`${button ? button.textContent : operation} ✓`);
      await again();
    } catch (e) {
      showError(e);
      if (button) button.disabled = false;
    }
  };
}

/** A table with a caption and headers; rows of cells (strings or nodes). */
export function table(caption, headers, rows, attrs = {}) {
  if (!rows.length) return h("p", { class: "empty" }, t("empty"));
  return h("table", attrs,
    h("caption", { class: "sr-only" }, caption),
    h("thead", {}, h("tr", {}, headers.map(x => h("th", { scope: "col" }, x)))),
    h("tbody", {}, rows.map(r => h("tr", {}, r.map(c => h("td", {}, c))))));
}

/** Tabs (WAI-ARIA tabs pattern: arrow keys move between tabs). */
export function tabs(items, selected, onSelect) {
  const list = h("div", { role: "tablist", class: "tabs" });
  items.forEach(([id, label, count]) => {
    const tab = h("button", {
      role: "tab", id: `tab-${id}`, "aria-selected": String(id === selected),
      tabindex: id === selected ? "0" : "-1", onclick: () => onSelect(id),
    }, label, count !== undefined ? h("span", { class: "count" }, String(count)) : "");
    list.append(tab);
  });
  list.addEventListener("keydown", e => {
    const all = [...list.querySelectorAll("[role=tab]")];
    const at = all.indexOf(document.activeElement);
    if (at < 0 || !["ArrowLeft", "ArrowRight"].includes(e.key)) return;
    const next = all[(at + (e.key === "ArrowRight" ? 1 : all.length - 1)) % all.length];
    next.focus();
    next.click();
  });
  return list;
}

/** A labelled form field. */
export function field(label, control, { required = false, hint } = {}) {
  const id = control.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  control.id = id;
  if (required) { control.required = true; control.setAttribute("aria-required", "true"); }
  return h("div", { class: "field" },
    h("label", { for: id }, label, required ? h("span", { class: "req", title: t("form.requiredMark") }, " *") : ""),
    control, hint ? h("small", {}, hint) : "");
}

export function formatTime(value) {
  if (!value) return "";
  const d = new Date(value);
  if (isNaN(d)) return value;
  const pad = n => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

export function formatDate(value) { return formatTime(value).slice(0, 10); }

/** The id of a reference "Type/id". */
export function refId(reference) {
  return reference && reference.reference ? reference.reference.split("/").pop() : null;
}

export function nameOf(resource) {
  const n = resource && resource.name && (Array.isArray(resource.name) ? resource.name[0] : resource.name);
  if (!n) return resource && resource.id || "";
  if (typeof n === "string") return n;
  return n.text || `${n.family || ""}${(n.given || []).join("")}`;
}
