// One consultation: its request and state, the actions of my side (accept, decline with a
// reason or a redirect, propose a time, schedule, start, cancel), the room (the server's
// /apps/consult-room page, embedded, or opened beside), the patient's record and images
// (record.js) beside the message thread (Communications partOf the Task, text and
// attachments, read receipts), and the opinion: written in its four sections, submitted,
// signed, shown and printed ($consultation-opinion, HTML or PDF); with the session's record
// (Encounter times, recordings) once it is over.
import { codesOf, display, t } from "../lib/i18n.js";
import { watch } from "../lib/live.js";
import { CCS, MESSAGE, OPEN, RECEIPT, SECTIONS, WAITING, hasCategory, output, parties, priorityLabel, sideOf, stage, stageBadge,
  typeLabel } from "../lib/consultation.js";
import { banner } from "../lib/referral.js";
import { h, field, formatTime, nameOf, notify, refId, showError, tabs, taskRunner } from "../lib/ui.js";
import { myRoles, roleNames } from "./consult.js";
import { expertChoices } from "./consult-form.js";
import { recordPart } from "./record.js";


/** <input type=datetime-local> value as an instant (the browser's time zone). */
const instant = value => (value ? new Date(value).toISOString() : "");

export async function consultView(ctx, view, taskId, panel = "record") {
  const { api } = ctx;
  const mine = await myRoles(ctx);
  const task = await api.request(`Task/${taskId}`);
  const [sr, patient] = await Promise.all([
    api.request(task.focus.reference),
    api.request(task.for.reference).catch(() => null),
  ]);
  const load = ref => (ref ? api.request(ref).catch(() => null) : null);
  const [appointment, encounter, opinion] = await Promise.all(
    ["appointment", "encounter", "opinion"].map(k => load(output(task, k))));
  const { experts } = parties(appointment);
  const names = await roleNames(ctx, [task.requester && task.requester.reference, ...experts.map(e => e.ref)]);
  const side = sideOf(ctx, task, appointment, mine);
  const code = stage(task);
  const me = experts.find(e => e.ref === ctx.user) || experts.find(e => mine.has(e.ref));
  let stopWatch = () => {};
  const again = () => { stopWatch(); return consultView(ctx, view, taskId, current).catch(showError); };
  let current = panel;

  const dialog = h("div", { id: "cdialog" });
  const run = taskRunner(api, taskId, again);
  const btn = (key, onclick, cls) => {
    const b = h("button", { type: "button", class: cls, dataset: { action: key } }, t(key));
    b.addEventListener("click", () => onclick(b));
    return b;
  };
  const asExpert = me ? [{ name: "expert", valueReference: { reference: me.ref } }] : [];

  // --- the actions of my side in this state (README state table, rows C2-C10)
  const actions = h("div", { class: "row", id: "cactions" });
  if (side === "expert" && me && ["needs-action", "tentative"].includes(me.status) && (WAITING.includes(code) || OPEN.includes(code))) {
    actions.append(btn("cact.accept", b => run("accept", asExpert, b)),
      btn("cact.decline", () => declineForm(), "danger"), btn("cact.propose", () => timeForm("propose-time"), "secondary"));
  }
  if (code === "accepted") actions.append(btn("cact.schedule", () => timeForm("schedule")));
  if (code === "scheduled" && side === "expert") actions.append(btn("cact.propose", () => timeForm("propose-time"), "secondary"));
  if (["accepted", "scheduled"].includes(code) && side) actions.append(btn("cact.start", b => run("start", [], b)));
  if (["scheduled", "in-progress", "opinion-drafted"].includes(code) && side && appointment && appointment.status === "booked") {
    actions.append(btn("cact.join", b => join(b)), btn("cact.joinBeside", b => join(b, true), "secondary"));
  }
  if (side === "inviting" && [...WAITING, "accepted", "scheduled"].includes(code)) {
    actions.append(btn("cact.cancel", () => cancelForm(), "danger"));
  }
  if (opinion) {
    actions.append(btn("cact.viewOpinion", () => showOpinion("html"), "secondary"),
      btn("cact.pdf", () => showOpinion("pdf"), "secondary"));
  }

  async function declineForm() {
    const reasons = h("select", { name: "reason" }, codesOf(CCS.decline).map(c => h("option", { value: c }, display(CCS.decline, c))));
    const others = (await expertChoices(ctx)).filter(r => !experts.some(e => e.ref === r.ref));
    const redirect = h("select", { name: "redirectTo" }, h("option", { value: "" }, t("reject.none")),
      others.map(o => h("option", { value: o.ref }, o.label)));
    const note = h("textarea", { name: "note", rows: 2 });
    const go = h("button", { type: "button", class: "danger" }, t("cact.decline"));
    go.addEventListener("click", () => {
      const params = [...asExpert, { name: "reason", valueCodeableConcept: { coding: [{ system: CCS.decline, code: reasons.value }],
        text: [reasons.selectedOptions[0].textContent, note.value.trim()].filter(Boolean).join("：") } }];
      if (redirect.value) params.push({ name: "redirectTo", valueReference: { reference: redirect.value } });
      run("decline", params, go);
    });
    dialog.replaceChildren(h("section", { class: "card", "aria-label": t("cact.decline") },
      field(t("cact.reason"), reasons, { required: true }), field(t("cact.redirect"), redirect), field(t("col.note"), note), go));
    reasons.focus();
  }

  async function timeForm(operation) {
    // schedule: one of the experts' free Slots (or a time agreed otherwise); propose: a time
    const slots = [];
    if (operation === "schedule") {
      for (const e of experts.filter(x => x.status === "accepted")) {
        const schedules = await api.search(`Schedule?actor=${e.ref}&active=true&_count=20`, 1);
        if (schedules.length) {
          slots.push(...await api.search(`Slot?schedule=${schedules.map(s => `Schedule/${s.id}`).join(",")}&status=free` +
            `&start=ge${encodeURIComponent(new Date().toISOString())}&_sort=start&_count=20`, 1));
        }
      }
    }
    const slot = h("select", { name: "slot" }, h("option", { value: "" }, t("cact.ownTime")),
      slots.map(s => h("option", { value: s.id }, formatTime(s.start))));
    const start = h("input", { type: "datetime-local", name: "start" });
    const end = h("input", { type: "datetime-local", name: "end" });
    const go = h("button", { type: "button" }, t(operation === "schedule" ? "cact.schedule" : "cact.propose"));
    go.addEventListener("click", () => {
      if (!slot.value && (!start.value || !end.value || end.value <= start.value)) {
        [start, end].forEach(x => x.setAttribute("data-touched", ""));
        notify(t("err.required"), "error", t("cact.timeHint"));
        start.focus();
        return;
      }
      const params = slot.value ? [{ name: "slot", valueReference: { reference: `Slot/${slot.value}` } }]
        : [{ name: "start", valueDateTime: instant(start.value) }, { name: "end", valueDateTime: instant(end.value) }];
      run(operation, operation === "propose-time" ? [...asExpert, ...params] : params, go);
    });
    dialog.replaceChildren(h("section", { class: "card" },
      operation === "schedule" ? field(t("consult.slot"), slot) : "",
      h("div", { class: "grid2" }, field(t("cact.start_"), start), field(t("cact.end"), end)), go));
    (operation === "schedule" ? slot : start).focus();
  }

  async function cancelForm() {
    const reason = h("textarea", { name: "cancel-reason", rows: 2 });
    const go = h("button", { type: "button", class: "danger" }, t("cact.cancel"));
    go.addEventListener("click", () => {
      if (!reason.value.trim()) { reason.setAttribute("data-touched", ""); notify(t("err.required"), "error", t("cact.reason")); reason.focus(); return; }
      run("cancel", [{ name: "reason", valueCodeableConcept: { text: reason.value.trim() } }], go);
    });
    dialog.replaceChildren(h("section", { class: "card" }, field(t("cact.reason"), reason, { required: true }), go));
    reason.focus();
  }

  // --- the room: Appointment/$join, then the server's room page in a dock that stays open
  // while the doctor moves between the record, the thread and the opinion (or in a window beside)
  const join = (button, beside = false) => joinRoom(ctx, appointment, (sr.code && sr.code.text) || "", button, beside);

  async function showOpinion(format) {
    try {
      const res = await api.request(`Composition/${opinion.id}/$consultation-opinion?format=${format}`,
        { raw: true, accept: format === "pdf" ? "application/pdf" : "text/html" });
      const url = URL.createObjectURL(await res.blob());
      if (format === "pdf") { h("a", { href: url, download: `consultation-opinion-${opinion.id}.pdf` }).click(); return; }
      const frame = h("iframe", { class: "slip", src: url, title: t("consult.opinion"), id: "opinion-frame" });
      dialog.replaceChildren(h("section", { class: "card" }, h("div", { class: "row" }, h("h3", {}, t("consult.opinion")),
        h("button", { type: "button", class: "secondary", onclick: () => { try { frame.contentWindow.print(); } catch (e) { /* no print here */ } } }, t("cact.print"))), frame));
    } catch (e) { showError(e); }
  }

  // --- the facts
  const facts = h("dl", { class: "facts" },
    h("dt", {}, t("consult.question")), h("dd", { id: "cquestion" }, (sr.code && sr.code.text) || ""),
    h("dt", {}, t("col.status")), h("dd", {}, stageBadge(task)),
    h("dt", {}, t("col.type")), h("dd", {}, typeLabel(sr)),
    h("dt", {}, t("consult.priority")), h("dd", {}, priorityLabel(task.priority)),
    h("dt", {}, t("consult.reason")), h("dd", {}, (sr.reasonCode || []).map(r => r.text).filter(Boolean).join("；"),
      (sr.note || []).map(n => h("div", { class: "muted" }, n.text))),
    h("dt", {}, t("consult.requester")), h("dd", {}, names(task.requester && task.requester.reference)),
    h("dt", {}, t("consult.experts")), h("dd", { id: "cexperts" }, experts.map(e => h("div", {}, names(e.ref), " ",
      h("span", { class: `status ${e.status}` }, t(`part.${e.status}`, e.status))))),
    h("dt", {}, t("consult.time")), h("dd", { id: "ctime" }, appointment && appointment.start
      ? `${formatTime(appointment.start)} – ${formatTime(appointment.end).slice(11)}` : t("consult.noTime")),
    WAITING.includes(code) && task.restriction && task.restriction.period
      ? [h("dt", {}, t("consult.due")), h("dd", {}, formatTime(task.restriction.period.end))] : [],
    (sr.supportingInfo || []).length ? [h("dt", {}, t("form.results")), h("dd", {}, (sr.supportingInfo || []).map(s => s.display || s.reference).join("、"))] : [],
  );

  // --- the panels beside the room: the record (and images), the opinion, the session record
  const panelBox = h("div", { role: "tabpanel", id: "cpanel" });
  const parts = [["record", t("nav.record")], ["images", t("rec.images")]];
  if (side === "expert" && ["in-progress", "opinion-drafted"].includes(code)) parts.push(["write", t("consult.write")]);
  if (opinion) parts.push(["opinion", t("consult.opinion")]);
  if (encounter) parts.push(["session", t("consult.sessionRecord")]);
  if (!parts.some(p => p[0] === current)) current = parts[0][0];
  const showPanel = async () => {
    panelBox.setAttribute("aria-labelledby", `tab-${current}`);
    panelBox.replaceChildren(h("p", { role: "status" }, t("loading")));
    const make = {
      record: () => (patient ? recordPart(ctx, patient.id, "summary") : h("p", { class: "empty" }, t("forbidden"))),
      images: () => (patient ? recordPart(ctx, patient.id, "images") : h("p", { class: "empty" }, t("forbidden"))),
      write: () => opinionForm(),
      opinion: () => opinionText(),
      session: () => sessionRecord(),
    }[current];
    try { panelBox.replaceChildren(await make()); } catch (e) { panelBox.replaceChildren(h("p", { class: "empty" }, e.message)); }
  };
  const bar = () => tabs(parts, current, id => { current = id; barBox.replaceChildren(bar()); showPanel(); });
  const barBox = h("div", {}, bar());

  function opinionForm() {
    const key = `yl-opinion-${ctx.user}-${taskId}`;
    const saved = JSON.parse(localStorage.getItem(key) || "null") || sectionsOf(opinion) || {
      historySummary: [(sr.reasonCode || []).map(r => r.text).join("；"), ...(sr.note || []).map(n => n.text)].filter(Boolean).join("\n"),
    };
    const form = h("form", { novalidate: true, id: "opinion-form", "aria-label": t("consult.write") });
    for (const [name, section] of SECTIONS) {
      const area = h("textarea", { name, rows: name === "opinion" ? 4 : 3 });
      area.value = saved[name] || "";
      form.append(field(display(CCS.section, section), area, { required: name === "opinion" }));
    }
    const keep = () => localStorage.setItem(key, JSON.stringify(Object.fromEntries(new FormData(form))));
    form.addEventListener("input", keep);
    const submit = h("button", { type: "submit", id: "submit-opinion" }, t("cact.submitOpinion"));
    const sign = code === "opinion-drafted" ? h("button", { type: "button", id: "sign-opinion", class: "secondary" }, t("cact.sign")) : "";
    form.append(h("div", { class: "row" }, submit, sign));
    form.addEventListener("submit", async e => {
      e.preventDefault();
      form.querySelectorAll("textarea").forEach(x => x.setAttribute("data-touched", ""));
      const bad = form.querySelector(":invalid");
      if (bad) { notify(t("err.required"), "error", bad.labels[0].textContent); bad.focus(); return; }
      const params = [...new FormData(form)].filter(([, v]) => String(v).trim())
        .map(([name, v]) => ({ name, valueString: String(v).trim() }));
      if (me) params.push({ name: "author", valueReference: { reference: me.ref } });
      submit.disabled = true;
      try {
        await api.operation(`Task/${taskId}/$submit-opinion`, params);
        localStorage.removeItem(key);
        notify(t("consult.opinionSaved"));
        await again();
      } catch (err) { showError(err); submit.disabled = false; }
    });
    if (sign) sign.addEventListener("click", () => run("sign", me ? [{ name: "signer", valueReference: { reference: me.ref } }] : [], sign));
    return form;
  }

  function opinionText() {
    const sections = sectionsOf(opinion) || {};
    const attested = (opinion.attester || []).find(a => a.mode === "legal");
    return h("article", { class: "opinion", id: "opinion", dataset: { status: opinion.status, composition: opinion.id } },
      h("p", {}, h("span", { class: `status ${opinion.status === "final" ? "completed" : "in-progress"}` },
        t(`opinion.${opinion.status}`, opinion.status)), " ",
        attested ? `${t("consult.signedBy")} ${names(attested.party && attested.party.reference)} ${formatTime(attested.time)}` : ""),
      SECTIONS.flatMap(([name, section]) => [h("h4", {}, display(CCS.section, section)),
        h("p", { class: "pre", dataset: { section } }, sections[name] || "")]));
  }

  async function sessionRecord() {
    const media = await api.search(`Media?encounter=Encounter/${encounter.id}&_count=20`, 1).catch(() => []);
    const period = encounter.period || {};
    const play = async (m, button) => {
      try {
        const res = await api.request(m.content.url, { raw: true, accept: m.content.contentType });
        const video = h("video", { controls: true, src: URL.createObjectURL(await res.blob()), class: "recording" });
        button.replaceWith(video);
      } catch (e) { showError(e); }
    };
    return h("div", { id: "session-record" },
      h("dl", { class: "facts" },
        h("dt", {}, t("consult.began")), h("dd", {}, formatTime(period.start)),
        h("dt", {}, t("consult.ended")), h("dd", { id: "session-ended" }, formatTime(period.end) || "—")),
      h("h4", {}, t("consult.attendance")),
      h("ul", {}, (encounter.participant || []).map(p => h("li", {}, names(p.individual && p.individual.reference), " ",
        p.period ? `${formatTime(p.period.start)} – ${formatTime(p.period.end).slice(11) || "…"}` : ""))),
      h("h4", {}, t("consult.recordings")),
      media.length ? h("ul", {}, media.map(m => {
        const b = h("button", { type: "button", class: "secondary" }, t("consult.play"));
        b.addEventListener("click", () => play(m, b));
        return h("li", {}, `${formatTime(m.createdDateTime || (m.meta && m.meta.lastUpdated))} · ${Math.round((m.content.size || 0) / 1024)} KB `, b);
      })) : h("p", { class: "empty" }, t("empty")));
  }

  // --- the message thread
  const thread = h("ol", { class: "thread", id: "thread", "aria-live": "polite" });
  let shown = "";
  async function loadThread() {
    const all = await api.search(`Communication?part-of=Task/${taskId}&_sort=sent&_count=200`, 2);
    const messages = all.filter(c => hasCategory(c, MESSAGE));
    const receipts = all.filter(c => hasCategory(c, RECEIPT));
    const readBy = id => receipts.filter(r => (r.inResponseTo || []).some(x => x.reference === `Communication/${id}`))
      .map(r => r.sender && r.sender.reference);
    const stamp = messages.map(m => m.id).join() + receipts.length;
    if (stamp !== shown) {
      shown = stamp;
      await roleNames(ctx, messages.map(m => m.sender && m.sender.reference));
      thread.replaceChildren(...messages.map(m => {
        const fromMe = m.sender && m.sender.reference === ctx.user;
        const readers = readBy(m.id).filter(r => r !== (m.sender && m.sender.reference));
        return h("li", { class: fromMe ? "mine" : "", dataset: { message: m.id } },
          h("small", {}, `${names(m.sender && m.sender.reference)} · ${formatTime(m.sent)}`),
          (m.payload || []).map(p => p.contentString ? h("p", { class: "pre" }, p.contentString)
            : p.contentAttachment ? attachment(p.contentAttachment)
            : p.contentReference ? h("p", {}, p.contentReference.display || p.contentReference.reference) : ""),
          fromMe ? h("small", { class: "read" }, readers.length ? t("msg.read") : t("msg.unread")) : "");
      }));
      thread.scrollTop = thread.scrollHeight;
    }
    view.dataset.messages = String(messages.length);
    // what others sent is read now that it is on screen: one receipt per message and reader
    for (const m of messages) {
      if (m.sender && m.sender.reference !== ctx.user && !readBy(m.id).includes(ctx.user)) {
        await api.operation(`Communication/${m.id}/$mark-read`, [{ name: "reader", valueReference: { reference: ctx.user } }]).catch(() => {});
      }
    }
  }
  function attachment(a) {
    const b = h("button", { type: "button", class: "secondary" }, `${t("msg.attachment")}：${a.title || a.url}`);
    b.addEventListener("click", async () => {
      try {
        const res = await api.request(a.url, { raw: true, accept: a.contentType || "application/octet-stream" });
        h("a", { href: URL.createObjectURL(await res.blob()), download: a.title || "attachment" }).click();
      } catch (e) { showError(e); }
    });
    return h("p", {}, b);
  }
  const draftKey = `yl-msg-${ctx.user}-${taskId}`;
  const text = h("textarea", { name: "message", rows: 2, id: "message-text" });
  text.value = sessionStorage.getItem(draftKey) || "";
  text.addEventListener("input", () => sessionStorage.setItem(draftKey, text.value));
  const file = h("input", { type: "file", name: "file", id: "message-file" });
  const send = h("button", { type: "submit", id: "send-message" }, t("msg.send"));
  const composer = h("form", { class: "composer", novalidate: true, "aria-label": t("msg.title") },
    field(t("msg.text"), text), field(t("msg.file"), file), h("div", { class: "row" }, send));
  composer.addEventListener("submit", async e => {
    e.preventDefault();
    const words = text.value.trim();
    const picked = file.files[0];
    if (!words && !picked) { notify(t("err.required"), "error", t("msg.text")); text.focus(); return; }
    send.disabled = true;
    try {
      const payload = words ? [{ contentString: words }] : [];
      if (picked) {
        const data = await base64(picked);
        const binary = await api.request("Binary", { method: "POST",
          body: { resourceType: "Binary", contentType: picked.type || "application/octet-stream", data } });
        payload.push({ contentAttachment: { contentType: binary.contentType, url: `Binary/${binary.id}`, title: picked.name, size: picked.size } });
      }
      const recipients = [task.requester && task.requester.reference, ...experts.map(x => x.ref)]
        .filter(r => r && r !== ctx.user).map(reference => ({ reference }));
      await api.request("Communication", { method: "POST", body: {
        resourceType: "Communication", status: "completed",
        category: [{ coding: [{ system: CCS.message, code: "consultation-message" }] }],
        partOf: [{ reference: `Task/${taskId}` }], basedOn: [{ reference: `ServiceRequest/${sr.id}` }],
        subject: task.for, sender: { reference: ctx.user }, recipient: recipients,
        sent: new Date().toISOString(), payload,
      } });
      text.value = ""; file.value = "";
      sessionStorage.removeItem(draftKey);
      await loadThread();
    } catch (err) { showError(err); } finally { send.disabled = false; }
  });
  const messagesCard = h("section", { class: "card messages", "aria-label": t("msg.title") },
    h("h3", {}, t("msg.title")), thread, composer);

  view.replaceChildren(
    banner(patient),
    h("div", { class: "row" }, h("h2", {}, `${t("nav.consult")} · ${(sr.code && sr.code.text) || ""}`),
      h("a", { href: "#/consult", class: "button secondary" }, t("act.back"))),
    actions, dialog,
    h("div", { class: "consult-grid" },
      h("div", {}, h("section", { class: "card" }, facts), h("section", { class: "card" }, barBox, panelBox)),
      messagesCard));
  view.dataset.stage = code || "";
  view.dataset.side = side || "";
  view.dataset.opinion = opinion ? opinion.status : "";
  await Promise.all([showPanel(), loadThread().catch(showError)]);
  stopWatch = watch(api, [`Communication?part-of=Task/${taskId}`, `Task?_id=${taskId}`], async active => {
    await loadThread();
    // the other side moved the consultation on: show its new state (not while typing)
    const fresh = await api.request(`Task/${taskId}`);
    const typing = view.querySelector("#opinion-form textarea:focus, #cdialog :focus, #message-text:focus");
    if (active() && fresh.meta.versionId !== task.meta.versionId && !typing) await again();
  });
  ctx.stop.push(stopWatch);
}

/** Enter a consultation's video room: Appointment/$join as me, then the server's room page in
 * the dock (or a window of its own, `beside`). */
export async function joinRoom(ctx, appointment, title, button, beside = false) {
  button.disabled = true;
  try {
    const out = await ctx.api.operation(`Appointment/${appointment.id}/$join`, [{ name: "participant", valueReference: { reference: ctx.user } }]);
    const token = (out.parameter || []).find(p => p.name === "token").valueString;
    const url = `/apps/consult-room?appointment=${encodeURIComponent(appointment.id)}&token=${encodeURIComponent(token)}`;
    if (beside) window.open(url, `consult-${appointment.id}`, "noopener,width=900,height=640");
    else openDock(url, title);
  } catch (e) {
    showError(e);
  } finally {
    button.disabled = false;
  }
}

/** The room's dock (outside #view: a new screen does not close the call); one room at a time. */
function openDock(url, title) {
  let dock = document.getElementById("room-dock");
  if (!dock) {
    dock = h("aside", { id: "room-dock", "aria-label": t("consult.room") });
    document.body.append(dock);
  }
  const frame = h("iframe", { src: url, title: t("consult.room"), allow: "camera; microphone; autoplay; fullscreen", id: "room-frame" });
  const leave = h("button", { type: "button", class: "secondary", id: "leave-room" }, t("cact.leave"));
  leave.addEventListener("click", () => { dock.remove(); document.body.classList.remove("in-room"); });
  const big = h("button", { type: "button", class: "secondary", "aria-pressed": "false" }, t("cact.enlarge"));
  big.addEventListener("click", () => big.setAttribute("aria-pressed", String(dock.classList.toggle("large"))));
  dock.replaceChildren(h("div", { class: "row" }, h("strong", {}, `${t("consult.room")} · ${title}`), big, leave), frame);
  document.body.classList.add("in-room");
}

/** The four sections' plain text of an opinion Composition, by parameter name. */
function sectionsOf(composition) {
  if (!composition) return null;
  const out = {};
  for (const [name, code] of SECTIONS) {
    const s = (composition.section || []).find(x => (x.code && x.code.coding || []).some(c => c.code === code));
    if (!s || !s.text) continue;
    const doc = new DOMParser().parseFromString(s.text.div, "text/html");
    out[name] = [...doc.querySelectorAll("p")].map(p => p.textContent).join("\n") || doc.body.textContent;
  }
  return out;
}

function base64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",")[1] || "");
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

export { nameOf, refId };
