// 会诊业务: my consultations (requests to me or my hospital's experts to accept, decline or
// propose a time; those we asked for; today's sessions; open ones; finished records) and the
// calendar of my sessions (日程管理: a week of my Appointments and my free Slots).
import { t } from "../lib/i18n.js";
import { watch } from "../lib/live.js";
import { OPEN, TASK_PROFILE, WAITING, output, parties, priorityLabel, stage, stageBadge,
  typeLabel } from "../lib/consultation.js";
import { h, formatTime, nameOf, notify, refId, table, tabs } from "../lib/ui.js";

/** My hospital's PractitionerRoles ("Type/id"): the consultations of my hospital are theirs. */
export async function myRoles(ctx) {
  if (!ctx.mine) {
    const roles = ctx.org ? await ctx.api.search(`PractitionerRole?organization=Organization/${ctx.org}&_count=200`, 2) : [];
    ctx.mine = new Set([ctx.user, ...roles.map(r => `PractitionerRole/${r.id}`)]);
  }
  return ctx.mine;
}

/** Names of PractitionerRoles ("陈立 · 杭州市第一人民医院"), looked up once per session. */
export async function roleNames(ctx, refs) {
  ctx.names = ctx.names || new Map();
  const want = [...new Set(refs)].filter(r => r && r.startsWith("PractitionerRole/") && !ctx.names.has(r));
  if (want.length) {
    const found = await ctx.api.search(`PractitionerRole?_id=${want.map(r => r.split("/")[1]).join(",")}` +
      "&_include=PractitionerRole:practitioner&_include=PractitionerRole:organization&_count=100", 1);
    const byRef = new Map(found.map(r => [`${r.resourceType}/${r.id}`, r]));
    for (const role of found.filter(r => r.resourceType === "PractitionerRole")) {
      const who = byRef.get(role.practitioner && role.practitioner.reference);
      const org = byRef.get(role.organization && role.organization.reference);
      const dept = (role.specialty || []).map(s => s.text).filter(Boolean).join("、");
      ctx.names.set(`PractitionerRole/${role.id}`, {
        name: who ? nameOf(who) : (role.practitioner && role.practitioner.display) || role.id,
        org: org ? nameOf(org) : "", dept,
      });
    }
  }
  return ref => {
    const n = ctx.names.get(ref);
    return n ? [n.name, n.dept, n.org].filter(Boolean).join(" · ") : ref || "";
  };
}

/** Every consultation the user may see, with its request, patient and Appointment. */
export async function consultations(ctx) {
  const { api } = ctx;
  const found = await api.search(`Task?_profile=${encodeURIComponent(TASK_PROFILE)}` +
    "&_include=Task:focus&_include=Task:patient&_sort=-_lastUpdated&_count=100", 3);
  const byRef = new Map(found.map(r => [`${r.resourceType}/${r.id}`, r]));
  const tasks = found.filter(r => r.resourceType === "Task");
  const wanted = tasks.map(task => output(task, "appointment")).filter(Boolean).map(r => r.split("/")[1]);
  for (let i = 0; i < wanted.length; i += 50) {
    for (const a of await api.search(`Appointment?_id=${wanted.slice(i, i + 50).join(",")}&_count=50`, 1)) {
      byRef.set(`Appointment/${a.id}`, a);
    }
  }
  return tasks.map(task => ({
    task,
    sr: byRef.get(task.focus && task.focus.reference),
    patient: byRef.get(task.for && task.for.reference),
    appointment: byRef.get(output(task, "appointment")),
  }));
}

function isToday(value) {
  return value && new Date(value).toDateString() === new Date().toDateString();
}

/** The worklists: which consultation goes in which. */
export function sort(items, mine) {
  const invitedMe = ({ appointment }) => parties(appointment).experts.some(e => mine.has(e.ref));
  const toAnswer = ({ appointment }) => parties(appointment).experts
    .some(e => mine.has(e.ref) && ["needs-action", "tentative"].includes(e.status));
  const asked = ({ task }) => task.requester && mine.has(task.requester.reference);
  return {
    incoming: items.filter(i => WAITING.includes(stage(i.task)) && toAnswer(i)),
    outgoing: items.filter(asked),
    today: items.filter(i => i.appointment && isToday(i.appointment.start) && !["cancelled"].includes(i.appointment.status)),
    open: items.filter(i => OPEN.includes(stage(i.task)) && (invitedMe(i) || asked(i))),
    records: items.filter(i => stage(i.task) === "completed"),
  };
}

export async function consultList(ctx, view, selected = "incoming") {
  const mine = await myRoles(ctx);
  let items = await consultations(ctx);
  const names = await roleNames(ctx, items.flatMap(i => [i.task.requester && i.task.requester.reference,
    ...parties(i.appointment).experts.map(e => e.ref)]));
  let current = selected;
  const rows = list => list.map(({ task, sr, patient, appointment }) => [
    h("a", { href: `#/consultation/${task.id}`, dataset: { task: task.id } }, (sr && sr.code && sr.code.text) || task.id),
    patient ? nameOf(patient) : refId(task.for),
    typeLabel(sr),
    priorityLabel(task.priority),
    current === "outgoing"
      ? parties(appointment).experts.map(e => names(e.ref)).join("；")
      : names(task.requester && task.requester.reference),
    appointment && appointment.start ? formatTime(appointment.start) : h("span", { class: "muted" }, t("consult.noTime")),
    stageBadge(task),
  ]);
  const render = () => {
    const l = sort(items, mine);
    const head = h("div", { class: "row" }, h("h2", {}, t("nav.consult")),
      ctx.patientId ? h("button", { type: "button", id: "new-consult", onclick: () => { location.hash = `#/consult-new/${ctx.patientId}`; } }, t("consult.new")) : "",
      h("a", { href: "#/calendar", class: "button secondary" }, t("nav.calendar")));
    const bar = tabs(["incoming", "outgoing", "today", "open", "records"].map(k => [k, t(`ctab.${k}`), l[k].length]),
      current, id => { current = id; location.replace(`#/consult/${id}`); render(); });
    const headers = [t("consult.question"), t("col.patient"), t("col.type"), t("consult.priority"),
      current === "outgoing" ? t("consult.experts") : t("consult.requester"), t("consult.time"), t("col.status")];
    view.replaceChildren(head, bar, h("div", { role: "tabpanel", "aria-labelledby": `tab-${current}` },
      table(t(`ctab.${current}`), headers, rows(l[current]), { class: "list", id: `clist-${current}` })));
  };
  render();
  // a request for my hospital appears without reloading (a websocket Subscription: live.js)
  const known = () => new Set(items.map(i => `${i.task.id}/${i.task.meta.versionId}`));
  ctx.stop.push(watch(ctx.api, `Task?_profile=${TASK_PROFILE}`, async active => {
    const before = known();
    const fresh = await consultations(ctx);
    if (!active()) return;
    const after = new Set(fresh.map(i => `${i.task.id}/${i.task.meta.versionId}`));
    if ([...after].some(k => !before.has(k)) || after.size !== before.size) {
      const newIncoming = sort(fresh, mine).incoming.some(i => !before.has(`${i.task.id}/${i.task.meta.versionId}`));
      items = fresh;
      await roleNames(ctx, items.flatMap(i => [i.task.requester && i.task.requester.reference,
        ...parties(i.appointment).experts.map(e => e.ref)]));
      if (!active()) return;
      if (newIncoming) notify(t("consult.arrived"));
      render();
    }
  }));
}

// --- 日程管理: the week of my sessions ----------------------------------------------------------

function monday(offset) {
  const d = new Date();
  d.setHours(0, 0, 0, 0);
  d.setDate(d.getDate() - ((d.getDay() + 6) % 7) + 7 * offset);
  return d;
}

export async function calendar(ctx, view, week = "0") {
  const { api } = ctx;
  const offset = Number(week) || 0;
  const from = monday(offset);
  const to = new Date(from.getTime() + 7 * 864e5);
  const range = `date=ge${encodeURIComponent(from.toISOString())}&date=lt${encodeURIComponent(to.toISOString())}`;
  const [appointments, schedules] = await Promise.all([
    api.search(`Appointment?actor=${ctx.user}&${range}&_count=100`, 2),
    api.search(`Schedule?actor=${ctx.user}&active=true&_count=20`, 1),
  ]);
  const slots = schedules.length ? await api.search(`Slot?schedule=${schedules.map(s => `Schedule/${s.id}`).join(",")}` +
    `&start=ge${encodeURIComponent(from.toISOString())}&start=lt${encodeURIComponent(to.toISOString())}&_sort=start&_count=100`, 2) : [];
  const sessions = appointments.filter(a => a.status !== "cancelled" && a.start);
  // the consultation behind each Appointment (Task.output): one search by the request
  const srs = [...new Set(sessions.flatMap(a => (a.basedOn || []).map(b => b.reference)))];
  const tasks = srs.length ? await api.search(`Task?focus=${srs.join(",")}&_count=100`, 1).catch(() => []) : [];
  const taskOf = a => tasks.find(task => output(task, "appointment") === `Appointment/${a.id}`);
  const events = [
    ...sessions.map(a => ({ start: a.start, end: a.end, kind: "session", a, task: taskOf(a) })),
    ...slots.filter(s => s.status === "free").map(s => ({ start: s.start, end: s.end, kind: "free", s })),
  ].sort((x, y) => String(x.start).localeCompare(String(y.start)));
  const hm = v => formatTime(v).slice(11);
  const days = [...Array(7).keys()].map(i => new Date(from.getTime() + i * 864e5));
  const grid = h("div", { class: "week", role: "grid", "aria-label": t("nav.calendar") }, days.map(day => {
    const mineToday = events.filter(e => new Date(e.start).toDateString() === day.toDateString());
    return h("section", { class: `day${day.toDateString() === new Date().toDateString() ? " today" : ""}`, role: "gridcell" },
      h("h3", {}, `${t(`weekday.${day.getDay()}`)} ${day.getMonth() + 1}/${day.getDate()}`),
      mineToday.length ? mineToday.map(e => e.kind === "session"
        ? h("a", { class: "event session", href: e.task ? `#/consultation/${e.task.id}` : "#/consult", dataset: { appointment: e.a.id } },
          h("b", {}, `${hm(e.start)}–${hm(e.end)}`), h("span", {}, e.a.description || t("consult.session")),
          e.task ? stageBadge(e.task) : "")
        : h("div", { class: "event free" }, h("b", {}, `${hm(e.start)}–${hm(e.end)}`), h("span", {}, t("cal.free"))))
        : h("p", { class: "muted" }, "—"));
  }));
  view.replaceChildren(
    h("div", { class: "row" }, h("h2", {}, t("nav.calendar")),
      h("a", { class: "button secondary", href: `#/calendar/${offset - 1}` }, t("cal.prev")),
      h("span", { id: "cal-range" }, `${formatTime(from).slice(0, 10)} – ${formatTime(new Date(to - 1)).slice(0, 10)}`),
      h("a", { class: "button secondary", href: `#/calendar/${offset + 1}` }, t("cal.next")),
      offset ? h("a", { class: "button secondary", href: "#/calendar" }, t("cal.thisWeek")) : ""),
    h("p", { class: "legend" }, h("span", {}, h("i", { class: "session" }), t("consult.session")),
      h("span", {}, h("i", { class: "free" }), t("cal.free"))),
    grid);
  view.dataset.sessions = String(sessions.length);
}
