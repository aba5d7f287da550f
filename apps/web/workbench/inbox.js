// The doctor app's 通知 and 消息 (the phone's bottom navigation; on a PC too): what arrived for
// me and my hospital (new referrals to accept or reject here, consultation requests to answer,
// today's sessions to join) and the message threads of my consultations. Both stay current by
// websocket Subscriptions (lib/live.js).
import { codesOf, display, t } from "../lib/i18n.js";
import { watch } from "../lib/live.js";
import { MESSAGE, RECEIPT, TASK_PROFILE, hasCategory, parties, stageBadge, typeLabel } from "../lib/consultation.js";
import { CS, directionLabel, number, statusBadge } from "../lib/referral.js";
import { h, formatTime, nameOf, notify, refId, showError } from "../lib/ui.js";
import { consultations, myRoles, roleNames, sort } from "./consult.js";
import { joinRoom } from "./consult-view.js";
import { awaitingDecision, referrals } from "./worklist.js";

/** The searches whose writes change the notifications (one Subscription each). */
function criteria(ctx) {
  return [`Task?owner=Organization/${ctx.org}`, `Task?_profile=${TASK_PROFILE}`];
}

// --- 通知 ---------------------------------------------------------------------------------------

export async function notifications(ctx, view) {
  const { api } = ctx;
  if (!ctx.org) { view.replaceChildren(h("p", { class: "empty" }, t("err.denied"))); return; }
  const mine = await myRoles(ctx);
  const load = async () => {
    const [incoming, consults] = await Promise.all([
      referrals(api, `owner=Organization/${ctx.org}&status=requested,received,accepted`),
      consultations(ctx),
    ]);
    const lists = sort(consults, mine);
    // the sessions I take part in (as the inviting doctor or an expert): to join
    const myPart = i => (i.task.requester && i.task.requester.reference === ctx.user) ||
      parties(i.appointment).experts.some(e => e.ref === ctx.user);
    const sessions = [...lists.today, ...lists.open].filter((i, n, all) => all.indexOf(i) === n &&
      i.appointment && i.appointment.status === "booked" && myPart(i));
    await roleNames(ctx, consults.map(i => i.task.requester && i.task.requester.reference));
    return { incoming: incoming.filter(i => awaitingDecision(i.task)), toAnswer: lists.incoming, sessions };
  };
  let data = await load();
  const seen = () => new Set([...data.incoming, ...data.toAnswer].map(i => i.task.id));

  const referralCard = ({ task, sr, patient }) => {
    const box = h("div", { class: "reject-box" });
    const accept = h("button", { type: "button", dataset: { action: "accept" } }, t("act.accept"));
    const reject = h("button", { type: "button", class: "danger", dataset: { action: "reject" } }, t("act.reject"));
    const run = async (operation, parameters, button) => {
      button.disabled = true;
      try {
        await api.operation(`Task/${task.id}/$${operation}`, parameters);
        notify(`${button.textContent} ✓`);
        data = await load();
        render();
      } catch (e) {
        showError(e);
        button.disabled = false;
      }
    };
    accept.addEventListener("click", () => run("accept", [], accept));
    reject.addEventListener("click", async () => {
      const reasons = h("select", { name: "reason", "aria-label": t("reject.reason") },
        codesOf(CS.rejection).map(c => h("option", { value: c }, display(CS.rejection, c))));
      const note = h("input", { name: "note", "aria-label": t("col.note") });
      const go = h("button", { type: "button", class: "danger", dataset: { action: "confirm-reject" } }, t("act.reject"));
      go.addEventListener("click", () => {
        const params = [{ name: "reason", valueCodeableConcept: {
          coding: [{ system: CS.rejection, code: reasons.value }], text: reasons.selectedOptions[0].textContent } }];
        if (note.value.trim()) params.push({ name: "note", valueString: note.value.trim() });
        run("reject", params, go);
      });
      box.replaceChildren(h("label", {}, t("reject.reason"), reasons), h("label", {}, t("col.note"), note), go);
      reasons.focus();
    });
    return h("li", { class: "card note-item", dataset: { task: task.id, kind: "referral" } },
      h("div", { class: "row" }, h("strong", {}, t("newArrival")), statusBadge(task)),
      h("p", {}, `${patient ? nameOf(patient) : refId(task.for)} · ${directionLabel(sr, task)} · `,
        (sr && sr.code && sr.code.text) || "", " · ", h("small", { class: "muted" }, number(sr) || "")),
      h("small", { class: "muted" }, formatTime(task.lastModified || task.authoredOn)),
      h("div", { class: "row" }, accept, reject, h("a", { href: `#/referral/${task.id}`, class: "button secondary" }, t("act.open"))),
      box);
  };

  const consultCard = ({ task, sr, patient, appointment }, joinable) => {
    const buttons = [h("a", { href: `#/consultation/${task.id}`, class: "button secondary" }, t("act.open"))];
    if (joinable) {
      const join = h("button", { type: "button", dataset: { action: "join" } }, t("cact.join"));
      join.addEventListener("click", () => joinRoom(ctx, appointment, (sr && sr.code && sr.code.text) || "", join));
      buttons.unshift(join);
    }
    return h("li", { class: "card note-item", dataset: { task: task.id, kind: joinable ? "session" : "consultation" } },
      h("div", { class: "row" }, h("strong", {}, joinable ? t("note.session") : t("consult.arrived")), stageBadge(task)),
      h("p", {}, `${patient ? nameOf(patient) : refId(task.for)} · ${typeLabel(sr)} · ${(sr && sr.code && sr.code.text) || ""}`),
      h("small", { class: "muted" }, appointment && appointment.start ? formatTime(appointment.start) : t("consult.noTime")),
      h("div", { class: "row" }, buttons));
  };

  const render = () => {
    const items = [...data.incoming.map(referralCard), ...data.toAnswer.map(i => consultCard(i, false)),
      ...data.sessions.map(i => consultCard(i, true))];
    view.replaceChildren(h("h2", {}, t("nav.notifications")),
      items.length ? h("ul", { class: "notes", id: "notes", "aria-live": "polite" }, items) : h("p", { class: "empty" }, t("note.none")));
    view.dataset.count = String(items.length);
  };
  render();
  ctx.stop.push(watch(api, criteria(ctx), async active => {
    const before = seen();
    const fresh = await load();
    if (!active()) return;
    data = fresh;
    if ([...seen()].some(id => !before.has(id))) notify(t("note.new"));
    render();
  }));
}

// --- 消息 ---------------------------------------------------------------------------------------

export async function messages(ctx, view) {
  const { api } = ctx;
  const mine = await myRoles(ctx);
  const load = async () => {
    const consults = await consultations(ctx);
    const byTask = new Map(consults.map(i => [`Task/${i.task.id}`, i]));
    const all = [];
    const refs = [...byTask.keys()];
    for (let i = 0; i < refs.length; i += 40) {
      all.push(...await api.search(`Communication?part-of=${refs.slice(i, i + 40).join(",")}&_sort=-sent&_count=200`, 2));
    }
    const said = all.filter(c => hasCategory(c, MESSAGE));
    const readByMe = new Set(all.filter(c => hasCategory(c, RECEIPT) && c.sender && mine.has(c.sender.reference))
      .flatMap(r => (r.inResponseTo || []).map(x => x.reference)));
    await roleNames(ctx, said.map(m => m.sender && m.sender.reference));
    const threads = [];
    for (const [ref, item] of byTask) {
      const thread = said.filter(m => (m.partOf || []).some(p => p.reference === ref));
      if (!thread.length) continue;
      const unread = thread.filter(m => !(m.sender && mine.has(m.sender.reference)) && !readByMe.has(`Communication/${m.id}`));
      threads.push({ item, last: thread[0], count: thread.length, unread: unread.length });
    }
    return threads.sort((a, b) => String(b.last.sent).localeCompare(String(a.last.sent)));
  };
  const names = ref => {
    const n = ctx.names && ctx.names.get(ref);
    return n ? n.name : refId({ reference: ref }) || "";
  };
  let threads = await load();
  const render = () => {
    const items = threads.map(({ item, last, count, unread }) => {
      const text = (last.payload || []).map(p => p.contentString || (p.contentAttachment && `📎 ${p.contentAttachment.title || ""}`)).filter(Boolean).join(" ");
      return h("li", { class: "card note-item", dataset: { task: item.task.id, unread: String(unread) } },
        h("a", { href: `#/consultation/${item.task.id}` },
          h("div", { class: "row" }, h("strong", {}, (item.sr && item.sr.code && item.sr.code.text) || item.task.id),
            unread ? h("span", { class: "status requested", title: t("msg.unread") }, `${t("msg.unread")} ${unread}`) : "")),
        h("p", {}, `${names(last.sender && last.sender.reference)}：${text}`),
        h("small", { class: "muted" }, `${item.patient ? nameOf(item.patient) : ""} · ${formatTime(last.sent)} · ${t("msg.count").replace("{n}", count)}`));
    });
    view.replaceChildren(h("h2", {}, t("nav.messages")),
      items.length ? h("ul", { class: "notes", id: "threads", "aria-live": "polite" }, items) : h("p", { class: "empty" }, t("msg.none")));
  };
  render();
  ctx.stop.push(watch(api, `Communication?category=${MESSAGE}`, async active => {
    const fresh = await load();
    if (!active()) return;
    threads = fresh;
    render();
  }));
}
