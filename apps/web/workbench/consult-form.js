// 发起会诊: a consultation request from the (launch) patient: type, urgency, the question and
// reason, results picked from the record, and the expert(s) found with
// PractitionerRole/$find-experts (ranked by free Slots), or a collaboration team; one of the
// chosen expert's free Slots books the session directly. What is typed is kept (network
// errors, an expired session) until the request is accepted by the server.
import { display, displayOf, t } from "../lib/i18n.js";
import { CCS, CONSULTATION, PRIORITIES, SNOMED, TYPES, priorityLabel } from "../lib/consultation.js";
import { banner } from "../lib/referral.js";
import { h, field, formatDate, formatTime, notify, showError } from "../lib/ui.js";
import { roleNames } from "./consult.js";

const select = (name, options, value) =>
  h("select", { name }, options.map(([v, label]) => h("option", { value: v, selected: v === value }, label)));

/** $find-experts as rows: [{role, freeSlots, firstFreeStart}] best first. */
async function findExperts(api, specialty) {
  const query = specialty ? `?specialty=${encodeURIComponent(`${SNOMED}|${specialty}`)}` : "";
  const found = await api.request(`PractitionerRole/$find-experts${query}`);
  return (found.parameter || []).filter(p => p.name === "expert").map(p => {
    const part = n => (p.part || []).find(x => x.name === n) || {};
    return {
      role: part("practitionerRole").valueReference.reference,
      free: part("freeSlots").valueInteger || 0,
      first: part("firstFreeStart").valueDateTime,
    };
  });
}

/** The free Slots of an expert's Schedules, soonest first. */
async function freeSlotsOf(api, role) {
  const schedules = await api.search(`Schedule?actor=${role}&active=true&_count=20`, 1);
  if (!schedules.length) return [];
  return api.search(`Slot?schedule=${schedules.map(s => `Schedule/${s.id}`).join(",")}&status=free` +
    `&start=ge${encodeURIComponent(new Date().toISOString())}&_sort=start&_count=30`, 1);
}

/** Experts to redirect a request to: [{ref, label}], best first. */
export async function expertChoices(ctx) {
  const found = await findExperts(ctx.api, "");
  const label = await roleNames(ctx, found.map(e => e.role));
  return found.map(e => ({ ref: e.role, label: label(e.role) }));
}

export async function consultForm(ctx, view, patientId) {
  const { api } = ctx;
  patientId = patientId || ctx.patientId;
  const [patient, observations, reports, studies, teams, specialties] = await Promise.all([
    api.request(`Patient/${patientId}`),
    api.search(`Observation?patient=Patient/${patientId}&_sort=-date&_count=15`, 1).catch(() => []),
    api.search(`DiagnosticReport?patient=Patient/${patientId}&_sort=-date&_count=10`, 1).catch(() => []),
    api.search(`ImagingStudy?patient=Patient/${patientId}&_count=10`, 1).catch(() => []),
    api.search(`CareTeam?category=${encodeURIComponent(`${CCS.team}|collaboration`)}&status=active&_count=50`, 1).catch(() => []),
    api.search("PractitionerRole?_elements=specialty&_count=200", 1).catch(() => []),
  ]);
  const draftKey = `yl-consult-draft-${ctx.user}-${patientId}`;
  const saved = JSON.parse(localStorage.getItem(draftKey) || "{}");
  const form = h("form", { novalidate: true, "aria-labelledby": "cform-title", id: "consult-form" });
  const area = (name, rows, attrs = {}) => { const a = h("textarea", { name, rows, ...attrs }); a.value = saved[name] || ""; return a; };
  const type = select("type", TYPES.map(c => [c, display(CCS.type, c)]), saved.type || "single-expert");
  const priority = select("priority", PRIORITIES.map(c => [c, priorityLabel(c)]), saved.priority || "routine");
  const question = h("input", { name: "question", value: saved.question || "", maxlength: "200" });
  const reason = area("reason", 2);
  const history = area("history", 3);
  const codes = new Map();
  for (const r of specialties) for (const s of r.specialty || []) {
    const c = (s.coding || []).find(x => x.system === SNOMED);
    if (c && s.text) codes.set(c.code, s.text);
  }
  const specialty = select("specialty", [["", t("consult.anySpecialty")], ...[...codes].map(([c, text]) => [c, text])], saved.specialty || "");
  const team = select("team", [["", t("consult.noTeam")], ...teams.map(x => [x.id, x.name || x.id])], saved.team || "");
  const teamField = field(t("consult.team"), team);
  const expertBox = h("div", { class: "experts", id: "experts", role: "group", "aria-label": t("consult.experts") });
  const slotBox = h("div", { class: "slots", id: "cslots", role: "radiogroup", "aria-label": t("consult.slot") });
  const picks = h("div", { class: "picks", role: "group", "aria-label": t("form.results") },
    [...observations, ...reports, ...studies].map(r => h("label", {},
      h("input", { type: "checkbox", name: "result", value: `${r.resourceType}/${r.id}`,
        checked: (saved.result || []).includes(`${r.resourceType}/${r.id}`) }),
      ` ${r.resourceType === "ImagingStudy" ? `${t("rec.images")} ${r.description || (r.modality || []).map(m => m.code).join("/")}` : displayOf(r.code)} ` +
      `${r.valueQuantity ? `${r.valueQuantity.value}${r.valueQuantity.unit || ""}` : r.conclusion || ""} ` +
      `${formatDate(r.effectiveDateTime || r.issued || r.started || "")}`)));

  const multi = () => type.value === "mdt";
  let asked = 0;
  const loadSlots = async () => {
    const mine = ++asked;
    const chosen = [...form.querySelectorAll("input[name=expert]:checked")].map(i => i.value);
    if (!chosen.length || team.value) { slotBox.replaceChildren(h("p", { class: "muted" }, t("consult.pickExpert"))); return; }
    slotBox.replaceChildren(h("p", { class: "muted" }, t("loading")));
    const slots = await freeSlotsOf(api, chosen[0]);
    if (mine !== asked) return;
    slotBox.replaceChildren(
      h("label", {}, h("input", { type: "radio", name: "slot", value: "", checked: !saved.slot }), h("span", {}, t("consult.noSlot"))),
      ...slots.map(s => h("label", {}, h("input", { type: "radio", name: "slot", value: s.id, checked: saved.slot === s.id }),
        h("span", {}, formatTime(s.start)))));
  };
  const loadExperts = async () => {
    expertBox.replaceChildren(h("p", { class: "muted" }, t("loading")));
    const found = await findExperts(api, specialty.value);
    const label = await roleNames(ctx, found.map(e => e.role));
    const kind = multi() ? "checkbox" : "radio";
    expertBox.replaceChildren(...(found.length ? found.filter(e => e.role !== ctx.user).map(e => h("label", { class: "expert" },
      h("input", { type: kind, name: "expert", value: e.role, checked: (saved.expert || []).includes(e.role) }),
      h("span", {}, h("b", {}, label(e.role)),
        h("small", {}, `${t("consult.freeSlots")} ${e.free}${e.first ? ` · ${t("consult.first")} ${formatTime(e.first)}` : ""}`))))
      : [h("p", { class: "empty" }, t("empty"))]));
    await loadSlots();
  };
  specialty.addEventListener("change", () => loadExperts().catch(showError));
  type.addEventListener("change", () => { teamField.hidden = !multi(); loadExperts().catch(showError); });
  team.addEventListener("change", () => loadSlots().catch(showError));
  expertBox.addEventListener("change", () => loadSlots().catch(showError));

  const values = () => {
    const data = Object.fromEntries(new FormData(form));
    data.result = new FormData(form).getAll("result");
    data.expert = new FormData(form).getAll("expert");
    return data;
  };
  const keep = () => localStorage.setItem(draftKey, JSON.stringify(values()));
  form.addEventListener("input", keep);
  form.addEventListener("change", keep);

  const submit = h("button", { type: "submit" }, t("consult.submit"));
  form.append(
    h("h3", { id: "cform-title" }, t("consult.new")),
    h("div", { class: "grid2" },
      field(t("consult.type"), type, { required: true }),
      field(t("consult.priority"), priority, { required: true, hint: t("consult.priorityHint") }),
    ),
    field(t("consult.question"), question, { required: true }),
    field(t("consult.reason"), reason, { required: true }),
    field(t("form.history"), history),
    h("fieldset", {}, h("legend", {}, t("form.results")), picks.childNodes.length ? picks : h("p", { class: "empty" }, t("empty"))),
    h("fieldset", {}, h("legend", {}, t("consult.experts")),
      h("div", { class: "grid2" }, field(t("consult.specialty"), specialty), teamField),
      expertBox),
    h("fieldset", {}, h("legend", {}, t("consult.slot")), slotBox),
    h("div", { class: "row" }, submit,
      h("button", { type: "button", class: "secondary", onclick: () => { location.hash = `#/record/${patientId}`; } }, t("act.back"))),
  );
  teamField.hidden = !multi();
  if (saved.reason || saved.question) notify(t("form.keepDraft"));
  view.replaceChildren(banner(patient), h("section", { class: "card" }, form));
  await loadExperts();

  form.addEventListener("submit", async e => {
    e.preventDefault();
    form.querySelectorAll("input,textarea,select").forEach(el => el.setAttribute("data-touched", ""));
    const data = values();
    const bad = form.querySelector(":invalid");
    const missing = bad ? (bad.labels && bad.labels[0] ? bad.labels[0].textContent : "")
      : !data.expert.length && !data.team ? t("consult.experts")
      : !multi() && data.expert.length > 1 ? t("consult.oneExpert") : "";
    if (missing) {
      notify(t("err.required"), "error", missing);
      (bad || expertBox.querySelector("input") || form).focus();
      return;
    }
    submit.disabled = true;
    try {
      const params = [{ name: "request", resource: serviceRequest(ctx, patientId, data) }];
      if (data.team) params.push({ name: "team", valueReference: { reference: `CareTeam/${data.team}` } });
      else data.expert.forEach(ref => params.push({ name: "expert", valueReference: { reference: ref } }));
      if (data.slot) params.push({ name: "slot", valueReference: { reference: `Slot/${data.slot}` } });
      const answer = await api.operation("ServiceRequest/$request-consultation", params);
      const task = answer.entry[0].resource;
      localStorage.removeItem(draftKey);
      notify(t("consult.sent"));
      location.hash = `#/consultation/${task.id}`;
    } catch (err) {
      showError(err);
      if (err.message === t("err.slotTaken")) await loadSlots().catch(() => {});
    } finally {
      submit.disabled = false;
    }
  });
}

/** The consultation request (profile yl-consultation-request): $request-consultation makes it
 *  active and adds the invited experts as performers. */
function serviceRequest(ctx, patientId, d) {
  return {
    resourceType: "ServiceRequest",
    status: "draft",
    intent: "order",
    priority: d.priority,
    category: [{ coding: [{ system: SNOMED, code: CONSULTATION, display: "Consultation" }] },
      { coding: [{ system: CCS.type, code: d.type }] }],
    code: { text: d.question.trim() },
    subject: { reference: `Patient/${patientId}` },
    requester: { reference: ctx.user },
    authoredOn: new Date().toISOString(),
    reasonCode: [{ text: d.reason.trim() }],
    supportingInfo: d.result.length ? d.result.map(reference => ({ reference })) : undefined,
    note: d.history && d.history.trim() ? [{ text: d.history.trim() }] : undefined,
  };
}
