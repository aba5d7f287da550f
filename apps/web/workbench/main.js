// The workbench (PC) and doctor app (the same page in a phone layout): launch context, the
// navigation and a hash router over the screens: referral (转诊业务), consultation (会诊业务,
// with its calendar), the patient record, check-in and statistics; the doctor app's
// notifications and messages.
import { loadCodes, setLanguage, language, t } from "../lib/i18n.js";
import { ready, takeReturn } from "../lib/smart.js";
import { h, nameOf, refId, showError } from "../lib/ui.js";
import { worklists } from "./worklist.js";
import { referralForm, referralDetail } from "./referral.js";
import { record } from "./record.js";
import { stats } from "./stats.js";
import { checkin } from "./checkin.js";
// 会诊业务 (consultation)
import { calendar, consultList } from "./consult.js";
import { consultForm } from "./consult-form.js";
import { consultView } from "./consult-view.js";
// the doctor app's 通知 and 消息
import { messages, notifications } from "./inbox.js";

const SCREENS = [
  ["referrals", "nav.referrals", worklists],
  ["consult", "nav.consult", consultList],
  ["calendar", "nav.calendar", calendar],
  ["record", "nav.record", record],
  ["checkin", "nav.checkin", checkin],
  ["stats", "nav.stats", stats],
  ["notifications", "nav.notifications", notifications],
  ["messages", "nav.messages", messages],
];
const HIDDEN = { new: referralForm, referral: referralDetail };
const CONSULT_HIDDEN = { "consult-new": consultForm, consultation: consultView };

/** Who is signed in: the PractitionerRole, its Organization, and the launch patient. */
async function context(api) {
  const user = String(api.fhirUser || "").split("/").slice(-2).join("/");
  const ctx = { api, user, org: null, orgName: "", patientId: api.patientId, stop: [] };
  if (user.startsWith("PractitionerRole/")) {
    const role = await api.request(user);
    ctx.role = role;
    ctx.org = refId(role.organization);
    ctx.orgName = (role.organization && role.organization.display) || "";
    if (ctx.org) ctx.orgName = nameOf(await api.request(`Organization/${ctx.org}`)) || ctx.orgName;
    ctx.userName = (role.practitioner && role.practitioner.display) ||
      (role.practitioner ? nameOf(await api.request(role.practitioner.reference).catch(() => null)) : "") || user;
  }
  return ctx;
}

function navigation(ctx, current) {
  const link = ([id, key]) => h("a", { href: `#/${id}`, "aria-current": id === current ? "page" : false }, t(key));
  const at = id => SCREENS.find(s => s[0] === id);
  document.getElementById("side").replaceChildren(...SCREENS.map(link));
  document.getElementById("bottom").replaceChildren(
    link(at("referrals")), link(at("consult")), link(at("record")), link(at("notifications")), link(at("messages")));
  document.getElementById("title").textContent = t("app.workbench");
  document.getElementById("who").textContent = [ctx.userName, ctx.orgName].filter(Boolean).join(" · ");
  document.getElementById("lang").textContent = t("lang.switch");
  document.title = `${t("app.workbench")} · ${ctx.orgName}`;
}

async function route(ctx) {
  ctx.stop.splice(0).forEach(stop => stop()); // end the previous screen's polling
  const [name, ...args] = (location.hash.replace(/^#\/?/, "") || "referrals").split("/");
  const screen = (SCREENS.find(s => s[0] === name) || [])[2] || HIDDEN[name] || CONSULT_HIDDEN[name] || worklists;
  navigation(ctx, name in HIDDEN ? "referrals" : name in CONSULT_HIDDEN ? "consult" : name);
  const view = document.getElementById("view");
  // a screen's data-* describe what it shows: none until the new screen has rendered
  for (const key of Object.keys(view.dataset)) delete view.dataset[key];
  view.replaceChildren(h("p", { role: "status" }, t("loading")));
  try {
    await screen(ctx, view, ...args.map(decodeURIComponent));
  } catch (e) {
    showError(e);
    view.replaceChildren(h("p", { class: "empty" }, e.message), h("small", { class: "muted" }, e.detail || ""));
  }
}

async function main() {
  const api = await ready();
  if (!api) return;
  await loadCodes();
  const ctx = await context(api);
  const back = takeReturn();
  if (back) location.hash = back;
  else if (!location.hash && ctx.patientId) location.hash = `#/record/${ctx.patientId}`;
  document.getElementById("lang").addEventListener("click", () => {
    setLanguage(language() === "zh" ? "en" : "zh");
    route(ctx);
  });
  window.addEventListener("hashchange", () => route(ctx));
  await route(ctx);
}

main().catch(showError);
