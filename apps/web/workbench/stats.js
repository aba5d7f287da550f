// 统计分析: ServiceRequest/$referral-stats as figures and charts (inline SVG, no library):
// volumes up/down/lateral, acceptance rate, median hours to decision, by hospital and month.
import { t } from "../lib/i18n.js";
import { h, showError } from "../lib/ui.js";

const DIRECTIONS = ["up", "down", "lateral"];
const COLOURS = { up: "#1a5fb4", down: "#2e7d32", lateral: "#b26a00" };

/** Parameters parts as {name: value} (nested parts as objects). */
function parts(list) {
  const out = {};
  for (const p of list || []) {
    const value = p.part ? parts(p.part) : Object.entries(p).find(([k]) => k.startsWith("value"));
    out[p.name] = p.part ? value : value && value[1];
  }
  return out;
}

/** A grouped bar chart: one group per key, one bar per direction (submitted). */
function bars(groups, title, room) {
  // drawn for the space it gets (a phone's 360 px or a PC's 1100), so labels stay legible
  const width = Math.max(300, Math.min(1100, room || 680)), height = 240, left = 36, bottom = 56, top = 10;
  const step = Math.max(1, Math.ceil(Math.max(...groups.flatMap(g => DIRECTIONS.map(d => (g[d] || {}).submitted || 0)), 0) / 4));
  const max = step * 4; // whole-number gridlines
  const slot = (width - left) / Math.max(1, groups.length);
  const bar = Math.min(18, (slot - 8) / 3);
  const y = v => top + (height - top - bottom) * (1 - v / max);
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", title);
  const add = (tag, attrs, text) => {
    const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
    Object.entries(attrs).forEach(([k, v]) => el.setAttribute(k, v));
    if (text !== undefined) el.textContent = text;
    svg.append(el);
    return el;
  };
  for (let i = 0; i <= 4; i++) {
    const v = step * i;
    add("line", { x1: left, x2: width, y1: y(v), y2: y(v), stroke: "#e3e7ec" });
    add("text", { x: 2, y: y(v) + 4 }, String(v));
  }
  groups.forEach((g, i) => {
    const x0 = left + i * slot + (slot - bar * 3) / 2;
    DIRECTIONS.forEach((d, j) => {
      const v = (g[d] || {}).submitted || 0;
      add("rect", { x: x0 + j * bar, y: y(v), width: bar - 2, height: height - bottom - y(v), fill: COLOURS[d] })
        .append(Object.assign(document.createElementNS("http://www.w3.org/2000/svg", "title"), { textContent: `${g.label} ${t(`stats.${d}`)} ${v}` }));
    });
    const fits = Math.max(3, Math.floor(slot / 12)); // characters of ~12 px that fit the slot
    const label = String(g.label).length > fits ? `${String(g.label).slice(0, fits - 1)}…` : g.label;
    add("text", { x: left + i * slot + slot / 2, y: height - bottom + 16, "text-anchor": "middle" }, label);
  });
  return h("figure", { class: "chart" }, h("figcaption", {}, title), svg,
    h("div", { class: "legend" }, DIRECTIONS.map(d => h("span", {}, h("i", { style: `background:${COLOURS[d]}` }), t(`stats.${d}`)))));
}

export async function stats(ctx, view) {
  const { api } = ctx;
  const year = new Date().getFullYear();
  const from = h("input", { type: "date", name: "from", value: `${year}-01-01` });
  const to = h("input", { type: "date", name: "to" });
  const scope = h("select", { name: "scope", "aria-label": t("stats.scope") }, h("option", { value: "mine" }, t("myOrg")), h("option", { value: "all" }, t("stats.consortium")));
  const out = h("div", { id: "stats-out" });
  const load = async () => {
    const q = new URLSearchParams();
    if (from.value) q.set("periodStart", from.value);
    if (to.value) q.set("periodEnd", to.value);
    if (scope.value === "mine" && ctx.org) q.set("organization", `Organization/${ctx.org}`);
    const get = extra => api.request(`ServiceRequest/$referral-stats?${q}${extra}`);
    const [total, byTarget, byMonth] = await Promise.all([get(""), get("&groupBy=target"), get("&groupBy=month")]);
    const totals = parts(total.parameter);
    const groups = body => (body.parameter || []).filter(p => p.name === "group").map(g => {
      const x = parts(g.part);
      return { ...x, label: x.display || x.key };
    });
    const kpis = h("div", { class: "kpis" }, DIRECTIONS.flatMap(d => {
      const x = totals[d] || {};
      return [h("div", { class: "kpi", dataset: { direction: d, submitted: x.submitted || 0, completed: x.completed || 0 } },
        `${t(`stats.${d}`)} · ${t("stats.submitted")}`, h("b", {}, String(x.submitted || 0)),
        h("small", {}, `${t("stats.accepted")} ${x.accepted || 0} · ${t("stats.rejected")} ${x.rejected || 0} · ${t("stats.completed")} ${x.completed || 0}`),
        h("br"), h("small", {}, `${t("stats.rate")} ${x.acceptanceRate === undefined ? "—" : `${Math.round(x.acceptanceRate * 100)}%`} · ${t("stats.median")} ${x.medianHoursToDecision === undefined ? "—" : x.medianHoursToDecision}`))];
    }));
    const room = out.clientWidth - 34;
    out.replaceChildren(kpis,
      h("section", { class: "card" }, bars(groups(byTarget), `${t("stats.byHospital")}（${t("stats.submitted")}）`, room)),
      h("section", { class: "card" }, bars(groups(byMonth), `${t("stats.byMonth")}（${t("stats.submitted")}）`, room)));
  };
  const form = h("form", { class: "row card", onsubmit: e => { e.preventDefault(); load().catch(showError); } },
    h("label", {}, `${t("stats.from")} `, from), h("label", {}, `${t("stats.to")} `, to), scope,
    h("button", { type: "submit" }, t("act.refresh")));
  view.replaceChildren(h("h2", {}, t("stats.title")), form, out);
  await load();
}
