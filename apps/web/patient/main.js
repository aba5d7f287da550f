// 掌上医院: the patient's own referrals and their status, appointments and the slip with its
// QR code, consultation times, follow-up tasks and results. The token is the patient's (patient/ scopes): the
// server shows nothing of anyone else, whatever this page asks.
import { displayOf, loadCodes, language, setLanguage, t } from "../lib/i18n.js";
import { OVER, TASK_PROFILE, output, stage, stageBadge, typeLabel } from "../lib/consultation.js";
import { FOLLOW_UP, FULFILL, directionLabel, isReferral, number, statusBadge } from "../lib/referral.js";
import { ready, takeReturn } from "../lib/smart.js";
import { h, formatDate, formatTime, nameOf, showError } from "../lib/ui.js";

const SCREENS = [["home", "me.referrals"], ["results", "me.results"], ["followups", "me.followups"]];

async function safe(promise) {
  try { return await promise; } catch (e) { return e.status === 403 ? [] : Promise.reject(e); }
}

async function home(api, view, me) {
  const [found, appointments, consults] = await Promise.all([
    safe(api.search(`Task?patient=Patient/${me.id}&code=${encodeURIComponent(FULFILL)}&_include=Task:focus&_sort=-_lastUpdated&_count=50`, 2)),
    safe(api.search(`Appointment?patient=Patient/${me.id}&_sort=-date&_count=50`, 1)),
    safe(api.search(`Task?patient=Patient/${me.id}&_profile=${encodeURIComponent(TASK_PROFILE)}&_include=Task:focus&_sort=-_lastUpdated&_count=20`, 1)),
  ]);
  // my consultations (会诊时间): the session's time is their Appointment's (Task.output)
  const byRef = new Map([...consults, ...appointments].map(r => [`${r.resourceType}/${r.id}`, r]));
  const sessions = consults.filter(r => r.resourceType === "Task").map(task =>
    ({ task, sr: byRef.get(task.focus && task.focus.reference), appointment: byRef.get(output(task, "appointment")) }));
  const consultAppointments = new Set(sessions.map(s => s.appointment && s.appointment.id));
  const srs = new Map(found.filter(r => r.resourceType === "ServiceRequest").map(s => [`ServiceRequest/${s.id}`, s]));
  const tasks = found.filter(r => r.resourceType === "Task" && isReferral(r) && r.status !== "draft"); // drafts are the doctor's
  const slipBox = h("div", { id: "slip" });
  const showSlip = async sr => {
    try {
      const res = await api.request(`ServiceRequest/${sr.id}/$referral-slip?format=html`, { raw: true, accept: "text/html" });
      const url = URL.createObjectURL(await res.blob());
      slipBox.replaceChildren(h("section", { class: "card" }, h("h3", {}, t("me.slip")),
        h("iframe", { class: "slip", src: url, title: t("me.slip") })));
      slipBox.scrollIntoView();
    } catch (e) { showError(e); }
  };
  const upcoming = appointments.filter(a => ["booked", "arrived", "pending"].includes(a.status) && !consultAppointments.has(a.id));
  view.replaceChildren(
    h("section", { class: "card", id: "my-referrals" }, h("h3", {}, t("me.referrals")),
      tasks.length ? tasks.map(task => {
        const sr = srs.get(task.focus && task.focus.reference) || {};
        return h("div", { class: "item", dataset: { number: number(sr) } },
          h("div", { class: "row" }, h("strong", {}, `${directionLabel(sr, task)} · ${sr.code ? sr.code.text : ""}`), statusBadge(task)),
          h("div", { class: "muted" }, `${t("col.number")} ${number(sr)} · ${(sr.performer || []).map(p => p.display || "").join("")} ${sr.performerType ? sr.performerType.text : ""}`),
          h("div", { class: "muted" }, formatTime(task.authoredOn)),
          task.status !== "draft" ? h("button", { type: "button", class: "secondary", onclick: () => showSlip(sr) }, t("detail.slip")) : "");
      }) : h("p", { class: "empty" }, t("empty"))),
    h("section", { class: "card", id: "my-appointments" }, h("h3", {}, t("me.appointment")),
      upcoming.length ? upcoming.map(a => h("div", { class: "item" }, h("strong", {}, formatTime(a.start)),
        ` ${a.description || ""}（${t(`appt.${a.status}`, a.status)}）`)) : h("p", { class: "empty" }, t("empty"))),
    h("section", { class: "card", id: "my-consultations" }, h("h3", {}, t("me.consult")),
      sessions.length ? sessions.map(({ task, sr, appointment }) => h("div", { class: "item", dataset: { task: task.id } },
        h("div", { class: "row" }, h("strong", { class: "when" }, appointment && appointment.start ? formatTime(appointment.start) : OVER.includes(stage(task)) ? "—" : t("consult.noTime")), stageBadge(task)),
        h("div", { class: "muted" }, `${typeLabel(sr)} · ${(sr && sr.code && sr.code.text) || ""}`))) : h("p", { class: "empty" }, t("empty"))),
    slipBox);
}

async function results(api, view, me) {
  const found = await safe(api.search(`Observation?patient=Patient/${me.id}&_sort=-date&_count=50`, 1));
  view.replaceChildren(h("section", { class: "card" }, h("h3", {}, t("me.results")),
    found.length ? found.map(o => h("div", { class: "item" }, h("strong", {}, displayOf(o.code)),
      ` ${o.valueQuantity ? `${o.valueQuantity.value} ${o.valueQuantity.unit || ""}` : o.valueString || ""}`,
      h("div", { class: "muted" }, formatTime(o.effectiveDateTime || o.issued)))) : h("p", { class: "empty" }, t("empty"))));
}

async function followups(api, view, me) {
  const found = await safe(api.search(`Task?patient=Patient/${me.id}&code=${encodeURIComponent(FOLLOW_UP)}&_sort=period&_count=50`, 1));
  view.replaceChildren(h("section", { class: "card" }, h("h3", {}, t("me.followups")),
    found.length ? found.map(task => h("div", { class: "item" },
      h("strong", {}, formatDate(task.restriction && task.restriction.period && task.restriction.period.start)),
      ` ${t(`task.${task.status}`, task.status)}`, h("div", { class: "muted" }, task.description || ""))) : h("p", { class: "empty" }, t("empty"))));
}

async function main() {
  const api = await ready();
  if (!api) return;
  await loadCodes();
  const me = await api.request(`Patient/${api.patientId}`);
  const back = takeReturn();
  if (back) location.hash = back;
  const route = async () => {
    const name = location.hash.replace(/^#\/?/, "") || "home";
    document.getElementById("title").textContent = t("app.patient");
    document.getElementById("who").textContent = nameOf(me);
    document.getElementById("lang").textContent = t("lang.switch");
    document.title = `${t("app.patient")} · ${nameOf(me)}`;
    document.getElementById("bottom").replaceChildren(...SCREENS.map(([id, key]) =>
      h("a", { href: `#/${id}`, "aria-current": id === name ? "page" : false }, t(key))));
    const view = document.getElementById("view");
    view.replaceChildren(h("p", { role: "status" }, t("loading")));
    try {
      await ({ home, results, followups }[name] || home)(api, view, me);
      view.prepend(h("p", { class: "banner", id: "me" }, h("strong", {}, nameOf(me)), ` ${formatDate(me.birthDate)}`));
    } catch (e) { showError(e); view.replaceChildren(h("p", { class: "empty" }, e.message)); }
  };
  document.getElementById("lang").addEventListener("click", () => { setLanguage(language() === "zh" ? "en" : "zh"); route(); });
  window.addEventListener("hashchange", route);
  await route();
}

main().catch(showError);
