// What the apps read off a remote consultation (README "Remote consultation"): the
// ServiceRequest (category SNOMED CT 11429006 + yl-consultation-type), its Task (status +
// yl-consultation-business-status), the Appointment (participants: inviting doctor, invited
// experts, the patient), the VR Encounter, the opinion Composition and the message thread.
import { display, t } from "./i18n.js";
import { YL } from "./referral.js";
import { h, refId } from "./ui.js";

export const CCS = {
  business: `${YL}/CodeSystem/yl-consultation-business-status`,
  type: `${YL}/CodeSystem/yl-consultation-type`,
  decline: `${YL}/CodeSystem/yl-consultation-decline-reason`,
  section: `${YL}/CodeSystem/yl-consultation-opinion-section`,
  role: `${YL}/CodeSystem/yl-consultation-role`,
  message: `${YL}/CodeSystem/yl-communication-category`,
  team: `${YL}/CodeSystem/yl-careteam-type`,
};
export const TASK_PROFILE = `${YL}/StructureDefinition/yl-consultation-task`;
export const SNOMED = "http://snomed.info/sct";
export const CONSULTATION = "11429006";
export const TYPES = ["single-expert", "mdt", "imaging", "ecg", "pathology"];
export const PRIORITIES = ["routine", "urgent", "stat"];
/** The opinion's four sections: (parameter of $submit-opinion, section code). */
export const SECTIONS = [
  ["historySummary", "history-summary"], ["findings", "findings"],
  ["opinion", "opinion"], ["recommendations", "recommendations"],
];
/** Business statuses in which the consultation is still to be answered, open, over. */
export const WAITING = ["requested", "redirected"];
export const OPEN = ["accepted", "scheduled", "in-progress", "opinion-drafted"];
export const OVER = ["completed", "declined", "cancelled", "expired"];

export function isConsultation(task) {
  return ((task && task.meta && task.meta.profile) || []).includes(TASK_PROFILE);
}

export function stage(task) {
  const c = task && task.businessStatus && (task.businessStatus.coding || [])[0];
  return c ? c.code : task && task.status;
}

export function stageBadge(task) {
  const code = stage(task);
  return h("span", { class: `status ${task.status}`, dataset: { stage: code || "" } }, display(CCS.business, code));
}

export function typeOf(sr) {
  for (const c of (sr && sr.category) || []) {
    const coding = (c.coding || []).find(x => x.system === CCS.type);
    if (coding) return coding.code;
  }
  return null;
}

export function typeLabel(sr) { return display(CCS.type, typeOf(sr) || ""); }

export function priorityLabel(code) { return t(`cpriority.${code || "routine"}`); }

/** The Task's output of a kind (appointment, encounter, opinion) as "Type/id". */
export function output(task, kind) {
  const found = (task.output || []).find(o => (o.type.coding || []).some(c => c.code === kind));
  return found && found.valueReference ? found.valueReference.reference : null;
}

/** The participants of the Appointment by role: {inviting: [ref], experts: [{ref, status}]} */
export function parties(appointment) {
  const role = p => ((p.type || [])[0] && (p.type[0].coding || [])[0] || {}).code;
  const all = (appointment && appointment.participant) || [];
  return {
    inviting: all.filter(p => role(p) === "inviting-doctor").map(p => p.actor.reference),
    experts: all.filter(p => role(p) === "invited-expert").map(p => ({ ref: p.actor.reference, status: p.status })),
  };
}

/** The thread's Communication categories: a message, and a read receipt ($mark-read). */
export const MESSAGE = `${CCS.message}|consultation-message`;
export const RECEIPT = `${CCS.message}|read-receipt`;

/** Whether a resource has the category `token` ("system|code"). */
export function hasCategory(resource, token) {
  const [system, code] = token.split("|");
  return (resource.category || []).some(x => (x.coding || []).some(y => y.system === system && y.code === code));
}

/** Which side of the consultation the user is on: "expert" (invited, by role or hospital),
 *  "inviting" or null. */
export function sideOf(ctx, task, appointment, mine) {
  const { experts, inviting } = parties(appointment);
  if (experts.some(e => e.ref === ctx.user)) return "expert";
  if (inviting.includes(ctx.user) || (task.requester && task.requester.reference === ctx.user)) return "inviting";
  if (experts.some(e => mine.has(e.ref))) return "expert";
  if (task.requester && mine.has(task.requester.reference)) return "inviting";
  return null;
}

export { refId };
