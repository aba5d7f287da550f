// 转诊业务: the worklists of my hospital. Incoming (to claim / review / accept / reject,
// including bookings waiting for review), awaiting arrival, arrivals today, outgoing (by state)
// and follow-ups due. The incoming list refreshes itself (a websocket Subscription: lib/live.js).
import { t } from "../lib/i18n.js";
import { watch } from "../lib/live.js";
import { FULFILL, FOLLOW_UP, business, directionLabel, isReferral, number, statusBadge } from "../lib/referral.js";
import { h, formatDate, formatTime, nameOf, notify, refId, table, tabs } from "../lib/ui.js";

const INCOMING = ["requested", "received"];

/** Tasks with their ServiceRequest and Patient (one search with _include). */
export async function referrals(api, query) {
  const found = await api.search(`Task?${query}&code=${encodeURIComponent(FULFILL)}` +
    "&_include=Task:focus&_include=Task:patient&_sort=-_lastUpdated&_count=100", 3);
  const byRef = new Map(found.map(r => [`${r.resourceType}/${r.id}`, r]));
  return found.filter(r => r.resourceType === "Task" && isReferral(r)).map(task => ({
    task,
    sr: byRef.get(task.focus && task.focus.reference),
    patient: byRef.get(task.for && task.for.reference),
  }));
}

function pendingReview(task) { return business(task) === "booked-pending-review"; }

/** An incoming referral waiting for my hospital's decision: new, claimed, or booked directly
 * and waiting for review (accept confirms the booking, T9). */
export function awaitingDecision(task) { return INCOMING.includes(task.status) || pendingReview(task); }

function rows(items, orgNames, { showFrom = true } = {}) {
  return items.map(({ task, sr, patient }) => [
    h("a", { href: `#/referral/${task.id}`, dataset: { task: task.id } }, number(sr) || task.id),
    patient ? h("a", { href: `#/record/${patient.id}` }, nameOf(patient)) : refId(task.for),
    directionLabel(sr, task),
    sr && sr.code ? sr.code.text || "" : "",
    showFrom ? orgNames(sr && sr.requester, true) : orgNames(task.owner),
    statusBadge(task),
    formatTime(task.lastModified || task.authoredOn),
  ]);
}

export async function worklists(ctx, view, selected = "incoming") {
  const { api, org } = ctx;
  if (!org) {
    view.replaceChildren(h("p", { class: "empty" }, t("err.denied")));
    return;
  }
  const orgs = new Map((await api.search("Organization?_count=100", 1)).map(o => [o.id, nameOf(o)]));
  const roles = new Map();
  const orgNames = (reference, viaRole = false) => {
    const id = refId(reference);
    if (!id) return "";
    if (viaRole || reference.reference.startsWith("PractitionerRole/")) return roles.get(id) || "";
    return orgs.get(id) || id;
  };

  // my hospital's people: Tasks cannot be searched by a chain (the consortium rule refuses
  // chains on types a user sees in part), so the references are listed
  const mine = (await api.search(`PractitionerRole?organization=Organization/${org}&_count=200`, 2))
    .map(r => `PractitionerRole/${r.id}`);
  const load = async () => {
    const [incoming, outgoing, followUps] = await Promise.all([
      referrals(api, `owner=Organization/${org}&status=requested,received,accepted,in-progress`),
      mine.length ? referrals(api, `requester=${mine.join(",")}`) : [],
      api.search(`Task?code=${encodeURIComponent(FOLLOW_UP)}&owner=${[`Organization/${org}`, ...mine].join(",")}` +
        "&status=requested,received,in-progress&_include=Task:patient&_sort=period&_count=100", 2),
    ]);
    // the sending hospital of each referral: its requester PractitionerRole's organization
    const want = new Set(incoming.map(i => refId(i.sr && i.sr.requester)).filter(id => id && !roles.has(id)));
    if (want.size) {
      for (const role of await api.search(`PractitionerRole?_id=${[...want].join(",")}&_count=100`, 1)) {
        roles.set(role.id, orgs.get(refId(role.organization)) || "");
      }
    }
    return { incoming, outgoing, followUps };
  };

  let data = await load();
  const today = new Date().toISOString().slice(0, 10);
  const todayMs = Date.now();
  const arrivedToday = ({ task }) => (task.extension || []).some(e => e.url.endsWith("yl-milestones") &&
    (e.extension || []).some(x => x.url === "code" && x.valueCoding.code === "arrived") &&
    (e.extension || []).some(x => x.url === "dateTime" && new Date(x.valueDateTime).toDateString() === new Date().toDateString()));
  const lists = () => {
    const { incoming, outgoing, followUps } = data;
    const due = followUps.filter(r => r.resourceType === "Task" &&
      new Date((r.restriction && r.restriction.period && r.restriction.period.start) || today).getTime() <= todayMs + 7 * 864e5);
    return {
      incoming: incoming.filter(i => awaitingDecision(i.task)),
      accepted: incoming.filter(i => i.task.status === "accepted" && !pendingReview(i.task)),
      today: incoming.filter(arrivedToday),
      outgoing,
      followup: due,
      patients: new Map(followUps.filter(r => r.resourceType === "Patient").map(p => [p.id, p])),
    };
  };

  let current = selected;
  let outFilter = "all";
  const render = () => {
    const l = lists();
    const head = h("div", { class: "row" },
      h("h2", {}, t("nav.referrals")),
      ctx.patientId ? h("button", { type: "button", onclick: () => { location.hash = `#/new/${ctx.patientId}`; } }, t("act.new")) : "",
      h("button", { type: "button", class: "secondary", onclick: async () => { data = await load(); render(); } }, t("act.refresh")));
    const bar = tabs([
      ["incoming", t("tab.incoming"), l.incoming.length],
      ["accepted", t("tab.accepted"), l.accepted.length],
      ["today", t("tab.today"), l.today.length],
      ["outgoing", t("tab.outgoing"), l.outgoing.length],
      ["followup", t("tab.followup"), l.followup.length],
    ], current, id => { current = id; location.replace(`#/referrals/${id}`); render(); });
    const headers = [t("col.number"), t("col.patient"), t("col.direction"), t("col.type"),
      current === "outgoing" ? t("col.to") : t("col.from"), t("col.status"), t("col.time")];
    let body;
    if (current === "followup") {
      body = table(t("tab.followup"), [t("col.patient"), t("col.due"), t("col.status"), ""],
        l.followup.map(task => {
          const p = l.patients.get(refId(task.for));
          return [p ? h("a", { href: `#/record/${p.id}` }, nameOf(p)) : refId(task.for),
            formatDate(task.restriction && task.restriction.period && task.restriction.period.start),
            h("span", { class: `status ${task.status}` }, t(`task.${task.status}`, task.status)), task.description || ""];
        }), { class: "list", id: "list-followup" });
    } else if (current === "outgoing") {
      const groups = {
        all: () => true,
        draft: i => i.task.status === "draft",
        submitted: i => INCOMING.includes(i.task.status),
        booked: i => i.task.status === "accepted" || i.task.status === "in-progress",
        rejected: i => i.task.status === "rejected" || i.task.status === "cancelled",
        completed: i => i.task.status === "completed",
      };

      const chips = h("div", { class: "row", role: "group", "aria-label": t("col.status") },
        Object.keys(groups).map(k => h("button", { type: "button", class: k === outFilter ? "" : "secondary",
          "aria-pressed": String(k === outFilter), onclick: () => { outFilter = k; render(); } }, t(`out.${k}`))));
      body = h("div", {}, chips, table(t("tab.outgoing"), headers,
        rows(l.outgoing.filter(groups[outFilter]), orgNames, { showFrom: false }), { class: "list", id: "list-outgoing" }));
    } else {
      body = table(t(`tab.${current}`), headers, rows(l[current], orgNames), { class: "list", id: `list-${current}` });
    }
    view.replaceChildren(head, bar, h("div", { role: "tabpanel", "aria-labelledby": `tab-${current}` }, body));
  };
  render();

  // new arrivals without reloading: a Subscription on my hospital's referral Tasks (lib/live.js)
  const known = () => new Set(data.incoming.map(i => `${i.task.id}/${i.task.meta.versionId}`));
  ctx.stop.push(watch(api, `Task?owner=Organization/${org}`, async active => {
    const before = known();
    const fresh = await load();
    if (!active()) return;
    const after = new Set(fresh.incoming.map(i => `${i.task.id}/${i.task.meta.versionId}`));
    const added = [...after].some(k => !before.has(k));
    if (added || after.size !== before.size) {
      data = fresh;
      if (added) notify(t("newArrival"));
      render();
    }
  }));
}
