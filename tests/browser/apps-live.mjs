// The apps' live parts (issue 16) in headless Chromium on the demo consortium: the tertiary
// hospital's referral office has its worklist open on a PC and the doctor app's 通知 open on a
// phone; a community doctor submits an up-referral; both screens show it without reloading,
// by websocket Subscription (the frames are recorded); the office's socket drops and the
// worklist reconnects; the office accepts it from the notification (and rejects another);
// leaving the worklist deletes its Subscription; the inviting doctor's phone
// shows a consultation message arriving in 消息 and enters the consultation room from 通知;
// the patient app shows the patient's consultation time. Prints one JSON object. Run by
// tests/test_apps_live_browser.py:
//   node apps-live.mjs '{"origin": ..., "iss": ..., "launch": ..., "password": ..., "shots": ...}'
import { MEDIA_ARGS, PC, PHONE, STEP, config, fillReferral, open, run, shot, signIn, text } from "./lib.mjs";

const WORKBENCH = `${config.origin}/apps/workbench/index.html`;

/** The websocket frames a page sends and receives (all, and by socket), and the socket URLs
 * it opened. */
function recordSockets(page) {
  const seen = { urls: [], sent: [], received: [], sockets: [] };
  page.on("websocket", ws => {
    if (!ws.url().includes("/fhir/websocket")) return;
    const one = { received: [] };
    seen.sockets.push(one);
    seen.urls.push(ws.url().replace(/access_token=[^&]+/, "access_token=…"));
    ws.on("framesent", f => seen.sent.push(String(f.payload)));
    ws.on("framereceived", f => { seen.received.push(String(f.payload)); one.received.push(String(f.payload)); });
  });
  return seen;
}

/** Wait until the page's socket number `index` (0: the first it opened) has bound. */
async function bound(page, seen, index = 0) {
  const deadline = Date.now() + STEP;
  while (!(seen.sockets[index] && seen.sockets[index].received.some(l => l.startsWith("bound ")))) {
    if (Date.now() > deadline) throw new Error(`${page.name}: no Subscription bound: ${JSON.stringify(seen)}`);
    await page.waitForTimeout(100);
  }
}

/** Wait until the screen open now has bound its socket: the last socket opened has bound and
 * no other opens for a moment (a screen left early opens none). */
async function settled(page, seen) {
  for (;;) {
    await bound(page, seen, Math.max(0, seen.sockets.length - 1));
    const count = seen.sockets.length;
    await page.waitForTimeout(300);
    if (seen.sockets.length === count) return;
  }
}

/** A FHIR request with the page's own SMART session (fhirclient keeps it in sessionStorage). */
function fhir(page, path, method = "GET") {
  return page.evaluate(async ([path, method]) => {
    const key = JSON.parse(sessionStorage.getItem("SMART_KEY"));
    const state = JSON.parse(sessionStorage.getItem(key));
    const res = await fetch(`${state.serverUrl}/${path}`, {
      method, headers: { Authorization: `Bearer ${state.tokenResponse.access_token}` },
    });
    return { status: res.status, body: res.status === 200 ? await res.json() : null };
  }, [path, method]);
}

async function journey(browser, out) {
  // the referral office (转诊办) of the tertiary hospital: the worklist on a PC ...
  const office = await open(browser, "office", { viewport: PC });
  const officeSockets = recordSockets(office);
  // the office's sockets pass through a route, so that the journey can drop one
  const officeRoutes = [];
  await office.routeWebSocket(/\/fhir\/websocket/, ws => { ws.connectToServer(); officeRoutes.push(ws); });
  await office.goto(`${config.origin}/apps/workbench/launch.html`);
  await signIn(office, "rc-hz-first");
  await office.waitForSelector(".tabs", { timeout: STEP });
  await office.goto(`${WORKBENCH}#/referrals/incoming`);
  await office.waitForSelector("#list-incoming, .tabs [aria-selected=true]", { timeout: STEP });

  // ... and the doctor app's 通知 on the office's phone
  const phone = await open(browser, "office-phone", { viewport: PHONE });
  const phoneSockets = recordSockets(phone);
  await phone.goto(`${config.origin}/apps/workbench/launch.html`);
  await signIn(phone, "rc-hz-first");
  await phone.waitForSelector(".tabs", { timeout: STEP });
  await phone.click('nav.bottom a[href="#/notifications"]');
  await phone.waitForSelector("#view[data-count]", { timeout: STEP });
  const navigations = { office: 0, phone: 0 };
  for (const page of [office, phone]) {
    page.on("framenavigated", f => { if (f === page.mainFrame()) navigations[page.name === "office" ? "office" : "phone"]++; });
  }
  // both bound their Subscriptions before anything is submitted
  await settled(office, officeSockets);
  await settled(phone, phoneSockets);
  const before = Number(await phone.getAttribute("#view", "data-count"));

  // the community doctor writes and submits an up-referral (EHR launch on the patient)
  const doctor = await open(browser, "doctor", { viewport: PC });
  await doctor.goto(`${config.origin}/apps/workbench/launch.html?${new URLSearchParams({ iss: config.iss, launch: config.launch })}`);
  await signIn(doctor, "dr-hubin-chc");
  await doctor.waitForSelector(".banner[data-patient]", { timeout: STEP });
  await doctor.click("#new-referral");
  const slots = await fillReferral(doctor, {
    target: "hz-first", department: config.department, diagnosis: "2型糖尿病", icd: "E11.9",
    reason: "血糖控制不佳，需调整治疗方案", history: "糖尿病病史5年",
  });
  await doctor.check(`input[name=slot][value="${slots[0]}"]`);
  await doctor.click("form button[type=submit]");
  await doctor.waitForSelector('#view[data-business="booked-pending-review"]', { timeout: STEP });
  const taskId = doctor.url().split("/").pop();
  out.submitted = { task: taskId, number: await text(doctor, "#referral-number") };

  // the worklist and the notifications show it without a page load
  await office.waitForSelector(`#list-incoming a[data-task="${taskId}"]`, { timeout: STEP });
  await phone.waitForSelector(`#notes li[data-task="${taskId}"][data-kind=referral]`, { timeout: STEP });
  out.arrival = {
    navigations: { ...navigations },
    notice: await text(office, ".notice"),
    before,
    after: Number(await phone.getAttribute("#view", "data-count")),
    card: await text(phone, `#notes li[data-task="${taskId}"]`),
  };
  await shot(office, "live-worklist-1366");
  await shot(phone, "live-notifications-390");

  // the office's socket drops (a proxy restarts): the worklist reconnects and binds again
  const socketsBefore = officeRoutes.length;
  const next = officeSockets.sockets.length;
  await officeRoutes[officeRoutes.length - 1].close({ code: 1012, reason: "restarting" });
  await bound(office, officeSockets, next);
  out.reconnected = { new: officeRoutes.length - socketsBefore };

  // accepted from the notification: the Task is accepted (the booking confirmed), and the
  // office's worklist (on its new socket) moves it out of 待处理 without a page load
  await phone.click(`#notes li[data-task="${taskId}"] [data-action=accept]`);
  await phone.waitForSelector(`#notes li[data-task="${taskId}"]`, { state: "detached", timeout: STEP });
  await office.waitForSelector(`#list-incoming a[data-task="${taskId}"]`, { state: "detached", timeout: STEP });
  out.reconnected.navigations = navigations.office;
  const accepted = await fhir(phone, `Task/${taskId}`);
  out.accepted = { status: accepted.body.status, business: accepted.body.businessStatus.coding[0].code };

  // rejected from a notification, with a reason (the first of yl-referral-rejection-reason,
  // no-capacity) and a note
  const other = await phone.getAttribute("#notes li[data-kind=referral]", "data-task");
  await phone.click(`#notes li[data-task="${other}"] [data-action=reject]`);
  await phone.waitForSelector(`#notes li[data-task="${other}"] select[name=reason]`, { timeout: STEP });
  await phone.fill(`#notes li[data-task="${other}"] input[name=note]`, "本院心内科床位已满");
  await shot(phone, "live-reject-390");
  await phone.click(`#notes li[data-task="${other}"] [data-action=confirm-reject]`);
  await phone.waitForSelector(`#notes li[data-task="${other}"]`, { state: "detached", timeout: STEP });
  const rejected = await fhir(phone, `Task/${other}`);
  out.rejected = { status: rejected.body.status, business: rejected.body.businessStatus.coding[0].code,
    reason: ((rejected.body.statusReason || {}).coding || [])[0], note: (rejected.body.note || []).map(n => n.text) };

  // leaving the worklist deletes its Subscriptions (no Subscription outlives its screen)
  const officeSubs = [...new Set(officeSockets.sent.filter(l => l.startsWith("bind ")).map(l => l.split(" ")[1]))];
  await office.click('nav.side a[href="#/stats"]');
  await office.waitForSelector(".kpi", { timeout: STEP });
  const gone = async () => Promise.all(officeSubs.map(async id => (await fhir(office, `Subscription/${id}`)).status));
  const until = Date.now() + STEP; // the deletes were sent as the screen closed: give them time
  out.leftBehind = await gone();
  while (out.leftBehind.some(status => status !== 410) && Date.now() < until) {
    await office.waitForTimeout(200);
    out.leftBehind = await gone();
  }
  // closing the phone's page deletes its screen's Subscriptions too (sent as the page goes)
  const phoneSubs = [...new Set(phoneSockets.sent.filter(l => l.startsWith("bind ")).map(l => l.split(" ")[1]))];
  const lastPhoneSub = phoneSubs.slice(-2); // 通知's two searches
  await phone.close({ runBeforeUnload: true });
  out.closedBehind = [];
  while (Date.now() < until + STEP) {
    out.closedBehind = await Promise.all(lastPhoneSub.map(async id => (await fhir(office, `Subscription/${id}`)).status));
    if (out.closedBehind.every(status => status === 410)) break;
    await office.waitForTimeout(200);
  }
  out.sockets = {
    office: { urls: officeSockets.urls, pings: officeSockets.received.filter(l => l.startsWith("ping ")).length, bound: officeSubs.length },
    phone: { urls: phoneSockets.urls, pings: phoneSockets.received.filter(l => l.startsWith("ping ")).length },
  };

  // the inviting doctor's phone: 消息 open; the expert writes in their scheduled consultation
  const doctorPhone = await open(browser, "doctor-phone", { viewport: PHONE });
  const doctorSockets = recordSockets(doctorPhone);
  await doctorPhone.goto(`${config.origin}/apps/workbench/launch.html`);
  await signIn(doctorPhone, "dr-hubin-chc");
  await doctorPhone.waitForSelector(".tabs", { timeout: STEP });
  await doctorPhone.click('nav.bottom a[href="#/notifications"]');
  await doctorPhone.waitForSelector("#notes li[data-kind=session]", { timeout: STEP });
  const session = await doctorPhone.getAttribute("#notes li[data-kind=session]", "data-task");
  await shot(doctorPhone, "live-doctor-notifications-390");
  await settled(doctorPhone, doctorSockets);
  const messagesSocket = doctorSockets.sockets.length; // the next one opened is 消息's
  await doctorPhone.click('nav.bottom a[href="#/messages"]');
  await doctorPhone.waitForSelector("#view h2", { timeout: STEP });
  await bound(doctorPhone, doctorSockets, messagesSocket);

  const expert = await open(browser, "expert", { viewport: PC });
  await expert.goto(`${config.origin}/apps/workbench/launch.html`);
  await signIn(expert, "dr-expert-1");
  await expert.waitForSelector(".tabs", { timeout: STEP });
  await expert.goto(`${WORKBENCH}#/consultation/${session}`);
  await expert.waitForSelector("#message-text", { timeout: STEP });
  await expert.fill("#message-text", "会诊前请上传最近一次心电图");
  await expert.click("#send-message");
  await expert.waitForSelector("#thread li[data-message]", { timeout: STEP });
  await doctorPhone.waitForSelector(`#threads li[data-task="${session}"]`, { timeout: STEP });
  out.messages = {
    thread: await text(doctorPhone, `#threads li[data-task="${session}"]`),
    unread: await doctorPhone.getAttribute(`#threads li[data-task="${session}"]`, "data-unread"),
  };
  await shot(doctorPhone, "live-messages-390");
  await shot(expert, "live-consultation-1366", { top: true });

  // 进入会诊室 from the notification: the room opens in the dock
  await doctorPhone.click('nav.bottom a[href="#/notifications"]');
  await doctorPhone.waitForSelector(`#notes li[data-task="${session}"] [data-action=join]`, { timeout: STEP });
  await doctorPhone.click(`#notes li[data-task="${session}"] [data-action=join]`);
  await doctorPhone.waitForSelector("#room-frame", { timeout: STEP });
  out.room = { url: (await doctorPhone.getAttribute("#room-frame", "src")).replace(/token=[^&]+/, "token=…") };
  await doctorPhone.waitForTimeout(1000);
  await shot(doctorPhone, "live-room-390");

  // the patient app: my consultation times
  const patient = await open(browser, "patient", { viewport: PHONE });
  await patient.goto(`${config.origin}/apps/patient/launch.html`);
  await signIn(patient, "pat-001");
  await patient.waitForSelector("#my-consultations", { timeout: STEP });
  out.patient = {
    consult: await text(patient, "#my-consultations"),
    times: await patient.$$eval("#my-consultations .when", all => all.map(e => e.textContent)),
  };
  await patient.evaluate(() => document.getElementById("my-consultations").scrollIntoView());
  await shot(patient, "live-patient-consult-390");
  const patientPc = await open(browser, "patient-pc", { viewport: PC });
  await patientPc.goto(`${config.origin}/apps/patient/launch.html`);
  await signIn(patientPc, "pat-001");
  await patientPc.waitForSelector("#my-consultations", { timeout: STEP });
  await shot(patientPc, "live-patient-1366");

  // the referral's 操作记录 (its Provenance), read by the receiving office
  await office.goto(`${WORKBENCH}#/referral/${taskId}`);
  await office.waitForSelector("#activity li", { timeout: STEP });
  out.activity = await office.$$eval("#activity li", all => all.map(li => li.dataset.activity));
  await office.evaluate(() => document.getElementById("activity").scrollIntoView());
  await shot(office, "live-activity-1366");

  // the sending doctor's withdrawal form offers yl-referral-cancel-reason's codes in order
  await doctor.goto(`${WORKBENCH}#/referral/${taskId}`);
  await doctor.waitForSelector('[data-action="act.cancel"]', { timeout: STEP });
  await doctor.click('[data-action="act.cancel"]');
  await doctor.waitForSelector("#dialog select[name=reason] option", { state: "attached", timeout: STEP });
  out.cancelChoices = await doctor.$$eval("#dialog select[name=reason] option", all => all.map(o => o.value));

  out.logs = Object.fromEntries([office, phone, doctor, doctorPhone, expert, patient].map(p => [p.name, p.logs]));
}

run(journey, { prefix: "live-", args: MEDIA_ARGS });
