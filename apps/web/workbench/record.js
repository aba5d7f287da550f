// 患者资料: one patient's record, as far as the consortium rule lets this doctor see it (the
// server narrows every search; a hidden patient answers 404, a refused type 403: both shown as
// an empty state, never as a broken page).
import { displayOf, t } from "../lib/i18n.js";
import { banner } from "../lib/referral.js";
import { h, formatDate, formatTime, nameOf, table, tabs } from "../lib/ui.js";

const PARTS = [
  ["summary", "rec.summary"], ["encounters", "rec.encounters"], ["results", "rec.results"],
  ["reports", "rec.reports"], ["images", "rec.images"], ["documents", "rec.documents"],
];

function quantity(o) {
  if (o.valueQuantity) return `${o.valueQuantity.value} ${o.valueQuantity.unit || ""}`;
  if (o.valueString) return o.valueString;
  if (o.valueCodeableConcept) return displayOf(o.valueCodeableConcept);
  if (o.component) return o.component.map(c => `${displayOf(c.code)} ${c.valueQuantity ? c.valueQuantity.value : ""}`).join("; ");
  return "";
}

/** A part of the record; a refusal becomes an empty state saying why. */
async function part(api, query) {
  try { return { rows: await api.search(query, 1) }; }
  catch (e) { return { error: e.status === 403 || e.status === 404 ? t("forbidden") : e.message }; }
}

async function render(ctx, id, which) {
  const { api } = ctx;
  const p = `patient=Patient/${id}`;
  const show = (caption, headers, found, row) => found.error
    ? h("p", { class: "empty" }, found.error)
    : table(caption, headers, found.rows.map(row), { class: "list" });
  switch (which) {
    case "encounters":
      return show(t("rec.encounters"), [t("col.time"), t("col.type"), t("col.provider")],
        await part(api, `Encounter?${p}&_sort=-date&_count=50`),
        e => [formatTime(e.period && e.period.start), (e.type || []).map(displayOf).join("、") || (e.class && e.class.code),
          e.serviceProvider ? e.serviceProvider.display || e.serviceProvider.reference : ""]);
    case "results":
      return show(t("rec.results"), [t("col.time"), t("col.test"), t("col.value")],
        await part(api, `Observation?${p}&_sort=-date&_count=50`),
        o => [formatTime(o.effectiveDateTime || o.issued), displayOf(o.code), quantity(o)]);
    case "reports":
      return show(t("rec.reports"), [t("col.time"), t("col.report"), t("col.conclusion")],
        await part(api, `DiagnosticReport?${p}&_sort=-date&_count=50`),
        r => [formatTime(r.effectiveDateTime || r.issued), displayOf(r.code), r.conclusion || ""]);
    case "images": {
      const found = await part(api, `ImagingStudy?${p}&_count=50&_include=ImagingStudy:endpoint`);
      if (found.error) return h("p", { class: "empty" }, found.error);
      const endpoints = new Map(found.rows.filter(r => r.resourceType === "Endpoint").map(e => [`Endpoint/${e.id}`, e]));
      const studies = found.rows.filter(r => r.resourceType === "ImagingStudy");
      return table(t("rec.images"), [t("col.time"), t("col.study"), ""], studies.map(s => {
        const viewer = (s.endpoint || []).map(r => endpoints.get(r.reference)).find(e => e && e.address);
        return [formatTime(s.started), s.description || (s.modality || []).map(m => m.code).join("/"),
          viewer ? h("a", { href: viewer.address, target: "_blank", rel: "noopener" }, t("rec.viewer")) : ""];
      }), { class: "list" });
    }
    case "documents":
      return show(t("rec.documents"), [t("col.time"), t("col.document"), ""],
        await part(api, `DocumentReference?${p}&_sort=-date&_count=50`),
        d => [formatTime(d.date), d.description || displayOf(d.type), (d.content || []).map(c => c.attachment && c.attachment.title).filter(Boolean).join("、")]);
    default: {
      const conditions = await part(api, `Condition?${p}&_count=50`);
      const recent = await part(api, `Observation?${p}&_sort=-date&_count=8`);
      return h("div", { class: "grid2" },
        h("section", { class: "card" }, h("h3", {}, t("rec.conditions")), show(t("rec.conditions"), [t("form.diagnosis"), t("col.time")],
          conditions, c => [displayOf(c.code), formatDate(c.onsetDateTime || c.recordedDate)])),
        h("section", { class: "card" }, h("h3", {}, t("rec.results")), show(t("rec.results"), [t("col.test"), t("col.value")],
          recent, o => [displayOf(o.code), quantity(o)])));
    }
  }
}

export async function record(ctx, view, id, which = "summary") {
  id = id || ctx.patientId;
  if (!id) {
    view.replaceChildren(h("h2", {}, t("nav.record")), h("p", { class: "empty" }, t("rec.pick")));
    return;
  }
  let patient;
  try {
    patient = await ctx.api.request(`Patient/${id}`);
  } catch (e) {
    view.replaceChildren(h("h2", {}, t("nav.record")), h("p", { class: "empty", id: "record-hidden" }, t("forbidden")));
    return;
  }
  const bar = tabs(PARTS.map(([k, key]) => [k, t(key)]), which, k => { location.hash = `#/record/${id}/${k}`; });
  const body = h("div", { role: "tabpanel", "aria-labelledby": `tab-${which}` }, h("p", { role: "status" }, t("loading")));
  view.replaceChildren(banner(patient),
    h("div", { class: "row" }, h("h2", {}, `${t("nav.record")} · ${nameOf(patient)}`),
      h("button", { type: "button", id: "new-referral", onclick: () => { location.hash = `#/new/${id}`; } }, t("act.new")),
      h("button", { type: "button", id: "new-consult", class: "secondary", onclick: () => { location.hash = `#/consult-new/${id}`; } }, t("consult.new"))),
    bar, body);
  body.replaceChildren(await render(ctx, id, which));
}

// the consultation view shows the same parts beside the room and the thread
export { render as recordPart };
