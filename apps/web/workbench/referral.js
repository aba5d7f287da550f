// The referral form (from the launch patient) and one referral's page: status, actions of my
// side (claim, accept, reject with reason or redirect, check-in, complete with a down-referral,
// withdraw), approval sub-tasks, the slip (print / PDF), the timeline (milestones + Provenance).
import { codesOf, display, displayOf, t } from "../lib/i18n.js";
import { CS, YL, banner, business, direction, directionLabel, milestoneLabel, milestones,
  number, referralType, statusBadge } from "../lib/referral.js";
import { h, field, formatDate, formatTime, nameOf, notify, refId, showError, table, taskRunner } from "../lib/ui.js";

const SNOMED_REFERRAL = { system: "http://snomed.info/sct", code: "3457005", display: "Patient referral" };
const TYPES = ["outpatient", "inpatient", "examination", "rehabilitation", "chronic-care"];

/** Options of a select from [value, label] pairs. */
function select(name, options, value) {
  return h("select", { name }, options.map(([v, label]) => h("option", { value: v, selected: v === value }, label)));
}

/** The hospitals of the consortium (Organization type prov), by id. */
async function hospitals(api) {
  return (await api.search("Organization?type=prov&_count=100", 1)).filter(o => o.active !== false);
}

/** The Schedules of a hospital's people (by their PractitionerRoles: no chained search). */
async function schedulesOf(api, orgId) {
  const roles = await api.search(`PractitionerRole?organization=Organization/${orgId}&_count=200`, 2);
  if (!roles.length) return [];
  return api.search(`Schedule?actor=${roles.map(r => `PractitionerRole/${r.id}`).join(",")}&active=true&_count=200`, 2);
}

/** Free reserved slots of a hospital (optionally one department), soonest first. */
async function freeSlots(api, orgId, department) {
  const schedules = (await schedulesOf(api, orgId))
    .filter(s => !department || (s.specialty || []).some(x => x.text === department));
  if (!schedules.length) return { schedules: [], slots: [] };
  const now = new Date().toISOString();
  const slots = await api.search(`Slot?schedule=${schedules.map(s => `Schedule/${s.id}`).join(",")}` +
    `&status=free&start=ge${encodeURIComponent(now)}&_sort=start&_count=60`, 1);
  return { schedules, slots };
}

/** Departments a hospital offers referral slots in (its Schedules' specialties). */
async function departments(api, orgId) {
  const schedules = await schedulesOf(api, orgId);
  return [...new Set(schedules.flatMap(s => (s.specialty || []).map(x => x.text)).filter(Boolean))];
}

// --- the form -------------------------------------------------------------------------------

export async function referralForm(ctx, view, patientId) {
  const { api } = ctx;
  patientId = patientId || ctx.patientId;
  const [patient, orgs, observations, reports, conditions] = await Promise.all([
    api.request(`Patient/${patientId}`),
    hospitals(api),
    api.search(`Observation?patient=Patient/${patientId}&_sort=-date&_count=20`, 1).catch(() => []),
    api.search(`DiagnosticReport?patient=Patient/${patientId}&_sort=-date&_count=10`, 1).catch(() => []),
    api.search(`Condition?patient=Patient/${patientId}&_count=20`, 1).catch(() => []),
  ]);
  const draftKey = `yl-draft-${ctx.user}-${patientId}`;
  const saved = JSON.parse(localStorage.getItem(draftKey) || "{}");
  const targets = orgs.filter(o => o.id !== ctx.org);
  const form = h("form", { novalidate: true, "aria-labelledby": "form-title" });
  const input = (name, attrs = {}) => h("input", { name, value: saved[name] || "", ...attrs });
  const area = (name, rows = 3) => { const a = h("textarea", { name, rows }); a.value = saved[name] || ""; return a; };
  const firstCondition = conditions[0];
  const dxDefault = saved.diagnosis || (firstCondition ? displayOf(firstCondition.code) : "");
  const icdDefault = saved.icd || ((firstCondition && firstCondition.code && (firstCondition.code.coding || [])
    .find(c => /icd-10/.test(c.system || "")) || {}).code || "");
  const dx = input("diagnosis", { value: dxDefault });
  const target = select("target", [["", "—"], ...targets.map(o => [o.id, nameOf(o)])], saved.target || "");
  const department = select("department", [["", "—"]], "");
  const type = select("type", TYPES.map(c => [c, display(CS.type, c)]), saved.type || "outpatient");
  const slotBox = h("div", { class: "slots", role: "radiogroup", "aria-label": t("form.slot"), id: "slots" });
  const inpatient = h("fieldset", { id: "inpatient", hidden: true }, h("legend", {}, t("form.inpatient")),
    field(t("form.ward"), input("ward")), field(t("form.admission"), input("admission", { type: "date" })));
  const review = h("input", { type: "checkbox", name: "pendingReview", checked: saved.pendingReview !== false });
  const picks = h("div", { class: "picks", role: "group", "aria-label": t("form.results") },
    [...observations, ...reports].map(r => h("label", {},
      h("input", { type: "checkbox", name: "result", value: `${r.resourceType}/${r.id}`,
        checked: (saved.result || []).includes(`${r.resourceType}/${r.id}`) }),
      ` ${displayOf(r.code)} ${valueText(r)} ${formatDate(r.effectiveDateTime || r.issued || "")}`)));

  let asked = 0; // the latest request wins (a quick change of department overtakes a slow one)
  const loadSlots = async () => {
    const mine = ++asked;
    slotBox.replaceChildren(h("p", { class: "muted" }, t("loading")));
    if (!target.value || type.value !== "outpatient") { slotBox.replaceChildren(); return; }
    const { slots } = await freeSlots(api, target.value, department.value);
    if (mine !== asked) return;
    slotBox.replaceChildren(
      h("label", {}, h("input", { type: "radio", name: "slot", value: "", checked: !saved.slot }), h("span", {}, t("form.noSlot"))),
      ...slots.map(s => h("label", {}, h("input", { type: "radio", name: "slot", value: s.id, checked: saved.slot === s.id }),
        h("span", {}, `${formatTime(s.start)} ${(s.specialty || []).map(x => x.text).join("")}`))));
  };
  const loadDepartments = async () => {
    const names = target.value ? await departments(api, target.value) : [];
    department.replaceChildren(h("option", { value: "" }, "—"),
      ...names.map(n => h("option", { value: n, selected: n === saved.department }, n)));
    await loadSlots();
  };
  target.addEventListener("change", () => loadDepartments().catch(showError));
  department.addEventListener("change", () => loadSlots().catch(showError));
  type.addEventListener("change", () => { inpatient.hidden = type.value !== "inpatient"; loadSlots().catch(showError); });

  // what is typed is kept (network errors, an expired session) until the referral is submitted
  const values = () => {
    const data = Object.fromEntries(new FormData(form));
    data.result = new FormData(form).getAll("result");
    data.pendingReview = review.checked;
    return data;
  };
  form.addEventListener("input", () => localStorage.setItem(draftKey, JSON.stringify(values())));
  form.addEventListener("change", () => localStorage.setItem(draftKey, JSON.stringify(values())));

  const submit = h("button", { type: "submit" }, t("act.submit"));
  form.append(
    h("h3", { id: "form-title" }, t("form.title")),
    h("div", { class: "grid2" },
      field(t("form.direction"), select("direction", ["up", "down", "lateral"].map(c => [c, display(CS.direction, c)]), saved.direction || "up")),
      field(t("form.type"), type),
      field(t("form.priority"), select("priority", [["routine", t("priority.routine")], ["urgent", t("priority.urgent")]], saved.priority || "routine")),
      field(t("form.target"), target, { required: true }),
      field(t("form.department"), department),
      field(t("form.diagnosis"), dx, { required: true }),
      field(t("form.icd"), input("icd", { value: icdDefault, pattern: "[A-Z][0-9]{2}(\\.[0-9A-Z]{1,4})?", placeholder: "I10" })),
    ),
    field(t("form.reason"), area("reason", 2), { required: true }),
    field(t("form.history"), area("history", 3)),
    field(t("form.plan"), area("plan", 2)),
    h("fieldset", {}, h("legend", {}, t("form.results")), picks.childNodes.length ? picks : h("p", { class: "empty" }, t("empty"))),
    h("fieldset", {}, h("legend", {}, t("form.slot")), slotBox,
      h("label", {}, review, ` ${t("form.review")}`)),
    inpatient,
    h("div", { class: "row" }, submit,
      h("button", { type: "button", class: "secondary", onclick: () => { location.hash = `#/record/${patientId}`; } }, t("act.back"))),
  );
  if (saved.reason) notify(t("form.keepDraft"));
  view.replaceChildren(banner(patient), h("section", { class: "card" }, form));
  inpatient.hidden = type.value !== "inpatient";
  await loadDepartments();

  form.addEventListener("submit", async e => {
    e.preventDefault();
    form.querySelectorAll("input,textarea,select").forEach(el => el.setAttribute("data-touched", ""));
    if (!form.checkValidity()) {
      const bad = form.querySelector(":invalid");
      notify(t("err.required"), "error", bad && bad.labels && bad.labels[0] ? bad.labels[0].textContent : "");
      if (bad) bad.focus();
      return;
    }
    submit.disabled = true;
    const data = values();
    try {
      const sr = serviceRequest(ctx, patientId, data, orgs);
      // a draft saved by an earlier attempt (network error after the create) is reused
      const existing = sessionStorage.getItem(`${draftKey}-sr`);
      const stored = existing
        ? await api.request(`ServiceRequest/${existing}`, { method: "PUT", body: { ...sr, id: existing } })
        : await api.request("ServiceRequest", { method: "POST", body: sr });
      sessionStorage.setItem(`${draftKey}-sr`, stored.id);
      const params = [];
      if (data.slot) params.push({ name: "slot", valueReference: { reference: `Slot/${data.slot}` } });
      if (data.slot && data.pendingReview) params.push({ name: "pendingReview", valueBoolean: true });
      const result = await api.operation(`ServiceRequest/${stored.id}/$submit`, params);
      const task = (result.entry || []).map(x => x.resource).find(r => r.resourceType === "Task");
      localStorage.removeItem(draftKey);
      sessionStorage.removeItem(`${draftKey}-sr`);
      notify(t("form.saved"));
      location.hash = `#/referral/${task.id}`;
    } catch (err) {
      showError(err);
      if (err.message === t("err.slotTaken")) await loadSlots().catch(() => {});
    } finally {
      submit.disabled = false;
    }
  });
}

function valueText(r) {
  if (r.valueQuantity) return `${r.valueQuantity.value}${r.valueQuantity.unit || ""}`;
  if (r.valueString) return r.valueString;
  if (r.valueCodeableConcept) return displayOf(r.valueCodeableConcept);
  return r.conclusion || "";
}

/** The 转诊申请单 as our profile yl-referral-request wants it (a draft; $submit numbers it). */
function serviceRequest(ctx, patientId, d, orgs) {
  const target = orgs.find(o => o.id === d.target);
  const notes = [d.history, d.type === "inpatient" && (d.ward || d.admission)
    ? `住院信息：${d.ward || ""} ${d.admission ? `拟入院 ${d.admission}` : ""}` : ""].filter(Boolean);
  return {
    resourceType: "ServiceRequest",
    meta: { profile: [`${YL}/StructureDefinition/yl-referral-request`] },
    extension: [{ url: `${YL}/StructureDefinition/yl-referral-direction`,
      valueCoding: { system: CS.direction, code: d.direction } }],
    status: "draft",
    intent: "order",
    category: [{ coding: [SNOMED_REFERRAL] }, { coding: [{ system: CS.type, code: d.type }] }],
    priority: d.priority,
    code: { text: display(CS.type, d.type) },
    subject: { reference: `Patient/${patientId}` },
    authoredOn: new Date().toISOString(),
    requester: { reference: ctx.user },
    performer: [{ reference: `Organization/${d.target}`, display: target ? nameOf(target) : undefined }],
    performerType: d.department ? { text: d.department } : undefined,
    reasonCode: [{
      coding: d.icd ? [{ system: "http://hl7.org/fhir/sid/icd-10", code: d.icd, display: d.diagnosis }] : undefined,
      text: d.diagnosis,
    }],
    supportingInfo: (d.result || []).length ? d.result.map(reference => ({ reference })) : undefined,
    note: [{ text: `转诊原因：${d.reason}` }, ...notes.map(text => ({ text }))],
    patientInstruction: d.plan || undefined,
  };
}

// --- one referral ---------------------------------------------------------------------------

export async function referralDetail(ctx, view, taskId) {
  const { api } = ctx;
  const task = await api.request(`Task/${taskId}`);
  const [sr, patient, provenance, approvals] = await Promise.all([
    api.request(task.focus.reference),
    api.request(task.for.reference).catch(() => null),
    api.search(`Provenance?target=Task/${taskId}&_count=100`, 2).catch(() => []),
    api.search(`Task?part-of=Task/${taskId}&_count=50`, 1).catch(() => []),
  ]);
  const apptRef = (task.output || []).map(o => o.valueReference && o.valueReference.reference)
    .find(r => r && r.startsWith("Appointment/"));
  const appointment = apptRef ? await api.request(apptRef).catch(() => null) : null;
  const requesterRole = sr.requester && sr.requester.reference.startsWith("PractitionerRole/")
    ? await api.request(sr.requester.reference).catch(() => null) : null;
  const senderOrg = requesterRole ? refId(requesterRole.organization) : refId(sr.requester);
  const receiver = refId(task.owner) === ctx.org;
  const sender = senderOrg === ctx.org;
  const again = () => referralDetail(ctx, view, taskId).catch(showError);

  const run = taskRunner(api, taskId, again);

  const actions = h("div", { class: "row", id: "actions" });
  const dialog = h("div", { id: "dialog" });
  const code = business(task);
  const btn = (key, onclick, cls) => {
    const b = h("button", { type: "button", class: cls, dataset: { action: key } }, t(key));
    b.addEventListener("click", () => onclick(b));
    return b;
  };
  if (receiver) {
    if (task.status === "requested") actions.append(btn("act.claim", b => run("claim", [], b), "secondary"));
    if (["requested", "received"].includes(task.status) || code === "booked-pending-review") {
      actions.append(btn("act.accept", b => accept(b)), btn("act.reject", () => rejectForm(), "danger"));
    }
    if (task.status === "accepted" && code !== "booked-pending-review") {
      actions.append(btn("act.checkin", b => run("check-in", [], b)));
    }
    if (code === "arrived") actions.append(btn("act.start", b => run("start-treatment", [], b), "secondary"));
    if (task.status === "in-progress") {
      actions.append(btn("act.complete", () => downForm()), btn("act.feedback", b => run("complete", [], b), "secondary"));
    }
  }
  if (sender && ["draft", "requested", "received", "accepted"].includes(task.status)) {
    actions.append(btn("act.cancel", () => cancelForm(), "danger"));
  }
  actions.append(btn("act.print", () => slip("html")), btn("act.pdf", () => slip("pdf"), "secondary"));

  async function accept(button) {
    // an outpatient referral is accepted by booking it: pick a slot unless it holds one
    if (referralType(sr) === "outpatient" && !appointment) {
      const { slots } = await freeSlots(api, ctx.org, sr.performerType && sr.performerType.text);
      const choice = select("slot", slots.map(s => [s.id, formatTime(s.start)]));
      dialog.replaceChildren(h("section", { class: "card" }, field(t("form.slot"), choice, { required: true }),
        h("button", { type: "button", onclick: e => run("accept", [{ name: "slot", valueReference: { reference: `Slot/${choice.value}` } }], e.target) }, t("act.accept"))));
      return;
    }
    await run("accept", [], button);
  }

  async function rejectForm() {
    const reasons = select("reason", codesOf(CS.rejection).map(c => [c, display(CS.rejection, c)]));
    const others = (await hospitals(api)).filter(o => o.id !== ctx.org);
    const suggest = select("suggested", [["", t("reject.none")], ...others.map(o => [o.id, nameOf(o)])]);
    const note = h("textarea", { name: "note", rows: 2 });
    const go = h("button", { type: "button", class: "danger" }, t("act.reject"));
    go.addEventListener("click", () => {
      const params = [{ name: "reason", valueCodeableConcept: { coding: [{ system: CS.rejection, code: reasons.value }], text: reasons.selectedOptions[0].textContent } }];
      if (suggest.value) params.push({ name: "suggestedOrganization", valueReference: { reference: `Organization/${suggest.value}` } });
      if (note.value.trim()) params.push({ name: "note", valueString: note.value.trim() });
      run("reject", params, go);
    });
    dialog.replaceChildren(h("section", { class: "card", "aria-label": t("act.reject") },
      field(t("reject.reason"), reasons, { required: true }), field(t("reject.redirect"), suggest), field(t("col.note"), note), go));
    reasons.focus();
  }

  async function cancelForm() {
    const reasons = select("reason", codesOf(CS.cancel).map(c => [c, display(CS.cancel, c)]));
    const go = h("button", { type: "button", class: "danger" }, t("act.cancel"));
    go.addEventListener("click", () => run("cancel", [{ name: "reason", valueCodeableConcept: { coding: [{ system: CS.cancel, code: reasons.value }] } }], go));
    dialog.replaceChildren(h("section", { class: "card" }, field(t("act.cancel"), reasons, { required: true }), go));
    reasons.focus();
  }

  async function downForm() {
    const orgs = await hospitals(api);
    const target = select("down-target", orgs.filter(o => o.id !== ctx.org).map(o => [o.id, nameOf(o)]), senderOrg);
    const reason = h("textarea", { name: "down-reason", rows: 3 });
    const go = h("button", { type: "button" }, t("act.complete"));
    go.addEventListener("click", () => {
      if (!reason.value.trim()) { reason.setAttribute("data-touched", ""); notify(t("err.required"), "error", t("down.reason")); reason.focus(); return; }
      const down = {
        resourceType: "ServiceRequest", status: "draft", intent: "order", priority: "routine",
        meta: { profile: [`${YL}/StructureDefinition/yl-referral-request`] },
        extension: [{ url: `${YL}/StructureDefinition/yl-referral-direction`, valueCoding: { system: CS.direction, code: "down" } }],
        category: [{ coding: [SNOMED_REFERRAL] }, { coding: [{ system: CS.type, code: "rehabilitation" }] }],
        code: { text: display(CS.type, "rehabilitation") },
        subject: sr.subject, authoredOn: new Date().toISOString(),
        reasonCode: [{ text: reason.value.trim() }],
        requester: { reference: ctx.user },
        performer: [{ reference: `Organization/${target.value}`, display: target.selectedOptions[0].textContent }],
      };
      run("complete", [{ name: "downwardReferral", resource: down }], go);
    });
    dialog.replaceChildren(h("section", { class: "card" }, field(t("down.target"), target, { required: true }),
      field(t("down.reason"), reason, { required: true }), go));
    reason.focus();
  }

  async function slip(format) {
    try {
      const res = await api.request(`ServiceRequest/${sr.id}/$referral-slip?format=${format}`, { raw: true, accept: format === "pdf" ? "application/pdf" : "text/html" });
      const url = URL.createObjectURL(await res.blob());
      if (format === "pdf") {
        h("a", { href: url, download: `${number(sr)}.pdf` }).click();
        return;
      }
      const frame = h("iframe", { class: "slip", src: url, title: t("detail.slip") });
      frame.addEventListener("load", () => { try { frame.contentWindow.print(); } catch (e) { /* print dialog unavailable */ } });
      dialog.replaceChildren(h("section", { class: "card" }, h("h3", {}, t("detail.slip")), frame));
    } catch (e) { showError(e); }
  }

  const facts = h("dl", { class: "facts" },
    h("dt", {}, t("col.number")), h("dd", { id: "referral-number" }, number(sr)),
    h("dt", {}, t("col.status")), h("dd", {}, statusBadge(task)),
    h("dt", {}, t("col.direction")), h("dd", {}, directionLabel(sr, task)),
    h("dt", {}, t("col.type")), h("dd", {}, display(CS.type, referralType(sr) || "")),
    h("dt", {}, t("form.target")), h("dd", {}, (sr.performer || []).map(p => p.display || p.reference).join("、"),
      sr.performerType ? ` · ${sr.performerType.text}` : ""),
    h("dt", {}, t("form.diagnosis")), h("dd", {}, (sr.reasonCode || []).map(displayOf).join("；")),
    h("dt", {}, t("form.history")), h("dd", {}, (sr.note || []).map(n => h("div", {}, n.text))),
    appointment ? [h("dt", {}, t("detail.appointment")), h("dd", { id: "appointment" }, `${formatTime(appointment.start)}（${t(`appt.${appointment.status}`, appointment.status)}）`)] : [],
    h("dt", {}, t("col.qr")), h("dd", { id: "qr-payload", class: "muted" }, `Task/${task.id}`),
  );
  // who did each step, by name (the organizations and people are shared by the consortium)
  const names = new Map();
  const agents = provenance.flatMap(p => (p.agent || []).map(a => a.who && a.who.reference));
  await Promise.all([...new Set([...milestones(task).map(m => m.actor), ...agents].filter(Boolean))].map(async ref => {
    const found = await api.request(ref).catch(() => null);
    const who = found && (found.resourceType === "PractitionerRole"
      ? [found.practitioner && found.practitioner.display, found.organization && found.organization.display].filter(Boolean).join(" · ")
      : nameOf(found));
    names.set(ref, who || ref);
  }));
  const timeline = h("ol", { class: "timeline", id: "timeline" },
    milestones(task).map(m => h("li", {}, h("strong", {}, milestoneLabel(m.code)),
      h("small", {}, `${formatTime(m.at)} ${names.get(m.actor) || ""}`))));
  // 操作记录: every transition's Provenance (what, when, who), oldest first
  const activity = h("ol", { class: "timeline", id: "activity" },
    provenance.sort((a, b) => String(a.recorded).localeCompare(String(b.recorded))).map(p => h("li", { dataset: { activity: (p.activity && (p.activity.coding || [])[0] || {}).code || "" } },
      h("strong", {}, displayOf(p.activity)),
      h("small", {}, `${formatTime(p.recorded)} ${(p.agent || []).map(a => a.who && (names.get(a.who.reference) || a.who.display || a.who.reference)).filter(Boolean).join("、")}`))));
  const subTasks = approvals.length ? h("section", { class: "card" }, h("h3", {}, t("detail.approvals")),
    table(t("detail.approvals"), [t("col.status"), t("col.approver"), ""], approvals.map(sub => [
      h("span", { class: `status ${sub.status}` }, t(`task.${sub.status}`, sub.status)), sub.owner ? sub.owner.display || sub.owner.reference : "",
      ["requested", "received"].includes(sub.status) && receiver
        ? h("button", { type: "button", onclick: async e => { e.target.disabled = true; try { await api.operation(`Task/${sub.id}/$accept`); await again(); } catch (err) { showError(err); e.target.disabled = false; } } }, t("act.approve"))
        : ""]))) : "";
  view.replaceChildren(
    banner(patient),
    h("h2", {}, `${t("form.title")} ${number(sr)}`),
    actions, dialog,
    h("div", { class: "grid2" },
      h("section", { class: "card" }, facts),
      h("section", { class: "card" }, h("h3", {}, t("detail.timeline")), timeline)),
    subTasks,
    // the Provenance targets the Task: the hospitals that see the referral read it
    provenance.length ? h("section", { class: "card" }, h("h3", {}, t("detail.provenance")), activity) : "",
  );
  view.dataset.status = task.status;
  view.dataset.business = code || "";
}

export { direction, hospitals };
