// What the apps read off referral resources (referral-model.md): the ServiceRequest (转诊申请单)
// and its Task (status + businessStatus), milestones, the patient banner.
import { display, displayOf, t } from "./i18n.js";
import { h, formatDate, nameOf } from "./ui.js";

export const YL = "https://yilian.health/fhir";
export const CS = {
  business: `${YL}/CodeSystem/yl-referral-business-status`,
  direction: `${YL}/CodeSystem/yl-referral-direction`,
  type: `${YL}/CodeSystem/yl-referral-type`,
  milestone: `${YL}/CodeSystem/yl-milestone`,
  rejection: `${YL}/CodeSystem/yl-referral-rejection-reason`,
  cancel: `${YL}/CodeSystem/yl-referral-cancel-reason`,
  transition: `${YL}/CodeSystem/yl-transition`,
  taskType: `${YL}/CodeSystem/yl-task-type`,
};
export const FULFILL = "http://hl7.org/fhir/CodeSystem/task-code|fulfill";
export const FOLLOW_UP = `${CS.taskType}|follow-up`;
export const NUMBER = `${YL}/sid/referral-number`;

/** A referral's Task, not a consultation's: both are `fulfill` Tasks for the patient
 *  (referral-model.md), told apart by the consultation profile or business status system. */
export function isReferral(task) {
  const profiles = (task.meta && task.meta.profile) || [];
  if (profiles.some(p => p.endsWith("/yl-consultation-task"))) return false;
  const c = task.businessStatus && (task.businessStatus.coding || [])[0];
  return !c || c.system === CS.business;
}

export function business(task) {
  const c = task && task.businessStatus && (task.businessStatus.coding || [])[0];
  return c ? c.code : null;
}

export function statusBadge(task) {
  const code = business(task);
  return h("span", { class: `status ${task.status}`, dataset: { business: code || "" } },
    code ? display(CS.business, code) : task.status);
}

function extension(resource, suffix) {
  return (resource && resource.extension || []).find(e => e.url.endsWith(suffix));
}

export function direction(sr, task) {
  const e = extension(sr, "yl-referral-direction") || extension(task, "yl-referral-direction");
  return e && e.valueCoding ? e.valueCoding.code : null;
}

export function directionLabel(sr, task) {
  const code = direction(sr, task);
  return code ? display(CS.direction, code) : "";
}

export function referralType(sr) {
  for (const c of (sr && sr.category) || []) {
    const coding = (c.coding || []).find(x => x.system === CS.type);
    if (coding) return coding.code;
  }
  return null;
}

export function number(sr) {
  const id = (sr && sr.identifier || []).find(i => i.system === NUMBER);
  return id ? id.value : (sr && sr.id) || "";
}

/** The Task's milestones (yl-milestones), oldest first: [{code, at, actor}] */
export function milestones(task) {
  return (task.extension || []).filter(e => e.url.endsWith("yl-milestones")).map(e => {
    const part = name => (e.extension || []).find(x => x.url === name) || {};
    return {
      code: (part("code").valueCoding || {}).code,
      at: part("dateTime").valueDateTime,
      actor: (part("actor").valueReference || {}).reference,
    };
  }).sort((a, b) => String(a.at).localeCompare(String(b.at)));
}

export function milestoneLabel(code) { return display(CS.milestone, code); }

export function genderLabel(g) { return t(`gender.${g || "unknown"}`); }

/** The patient banner (SMART need_patient_banner; the workbench always shows it). */
export function banner(patient) {
  if (!patient) return "";
  const org = patient.managingOrganization && patient.managingOrganization.display;
  return h("section", { class: "banner", "aria-label": t("launchPatient"), dataset: { patient: patient.id } },
    h("strong", {}, nameOf(patient)),
    h("span", {}, `${t("rec.gender")}：${genderLabel(patient.gender)}`),
    h("span", {}, `${t("rec.birth")}：${formatDate(patient.birthDate)}`),
    org ? h("span", {}, `${t("rec.org")}：${org}`) : "",
    h("span", { class: "muted" }, `ID ${patient.id}`));
}

export { displayOf };
