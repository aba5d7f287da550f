// Drives the workbench's consultation area (会诊业务, issue 16) in headless Chromium with a fake
// camera and microphone: a community doctor requests a consultation from the launch patient
// and picks an expert found by $find-experts; the expert (another browser context, another
// user) accepts and schedules; both enter the room and decode each other's video; messages go
// both ways (with an attachment and read receipts); the expert writes, submits and signs the
// opinion; the doctor sees it signed. Prints what each screen showed as one JSON object. Run by
// tests/test_apps_consult_browser.py:
//   node consult.mjs '{"origin": ..., "iss": ..., "launch": ..., "password": ..., "shots": ...}'
import { MEDIA_ARGS, PHONE, STEP, config, open, run, shot, signIn, text } from "./lib.mjs";

const VIDEO = 45000;
const CARDIOLOGY = "394579002"; // SNOMED CT, the demo's 心血管内科 experts
const stage = (page, code) => page.waitForSelector(`#view[data-stage="${code}"]`, { timeout: STEP });
const notice = async page => {
  await page.waitForSelector(".notice.error:not([hidden])", { timeout: STEP });
  const said = await text(page, ".notice");
  await page.evaluate(() => { document.getElementById("notice").hidden = true; });
  return said;
};

/** The room embedded in the workbench: its window.consultRoom.state(). */
async function roomState(page) {
  const frame = page.frames().find(f => f.url().includes("/apps/consult-room"));
  return frame ? frame.evaluate(() => window.consultRoom && window.consultRoom.state()) : null;
}

async function journey(browser, out) {
  // the expert of the tertiary hospital: standalone launch, consultation worklist open
  const expert = await open(browser, "expert", { notFound: true });
  await expert.goto(`${config.origin}/apps/workbench/launch.html`);
  await signIn(expert, "dr-expert-1");
  await expert.waitForSelector("#view .tabs", { timeout: STEP }); // signed in: the worklist shows
  await expert.goto(`${config.origin}/apps/workbench/index.html#/consult/incoming`);
  await expert.waitForSelector("#clist-incoming, .tabs", { timeout: STEP });
  out.incomingBefore = await expert.$$eval("#clist-incoming a[data-task]", all => all.map(a => a.dataset.task));

  // the community doctor: EHR launch on the EMR's patient, the request form from the record
  const doctor = await open(browser, "doctor", { notFound: true });
  await doctor.goto(`${config.origin}/apps/workbench/launch.html?${new URLSearchParams({ iss: config.iss, launch: config.launch })}`);
  await signIn(doctor, "dr-hubin-chc");
  await doctor.waitForSelector(".banner[data-patient]", { timeout: STEP });
  await doctor.click("#new-consult");
  await doctor.waitForSelector("#consult-form #experts input[name=expert]", { timeout: STEP });

  // 1. nothing filled in: the form says what is missing before sending anything
  await doctor.click("#consult-form button[type=submit]");
  out.empty = await notice(doctor);

  // experts of cardiology, as $find-experts ranks them (shown best first)
  await doctor.selectOption("select[name=specialty]", CARDIOLOGY);
  await doctor.waitForFunction(() => {
    const all = [...document.querySelectorAll("#experts input[name=expert]")];
    return all.length && all.every(i => !i.closest("label").textContent.includes("神经内科"));
  }, null, { timeout: STEP });
  out.shown = await doctor.$$eval("#experts input[name=expert]", all => all.map(i => i.value));
  out.found = await doctor.evaluate(async ({ code }) => {
    const key = JSON.parse(sessionStorage.getItem("SMART_KEY"));
    const state = JSON.parse(sessionStorage.getItem(key));
    const res = await fetch(`${state.serverUrl}/PractitionerRole/$find-experts?specialty=${encodeURIComponent(`http://snomed.info/sct|${code}`)}`,
      { headers: { Authorization: `Bearer ${state.tokenResponse.access_token}`, Accept: "application/fhir+json" } });
    return (await res.json()).parameter.map(p => p.part.find(x => x.name === "practitionerRole").valueReference.reference);
  }, { code: CARDIOLOGY });
  await doctor.selectOption("select[name=priority]", "urgent");
  await doctor.fill("input[name=question]", "胸痛待查，请心内科会诊");
  await doctor.fill("textarea[name=reason]", "反复胸痛三月，活动后加重，心电图ST段压低");
  await doctor.fill("textarea[name=history]", "高血压病史10年");
  const firstResult = await doctor.$("input[name=result]");
  if (firstResult) await firstResult.check();
  await doctor.check('#experts input[value="PractitionerRole/role-expert-1"]');
  await doctor.waitForSelector("#cslots input[name=slot][value]:not([value=''])", { timeout: STEP });
  const slots = await doctor.$$eval("#cslots input[name=slot]", all => all.map(i => i.value).filter(Boolean));
  await doctor.check(`#cslots input[name=slot][value="${slots[0]}"]`);
  await shot(doctor, "consult-form-1366", { top: true });

  // 2. the network fails: said in Chinese, what was typed stays
  await doctor.route("**/fhir/ServiceRequest/$request-consultation", route => route.abort());
  await doctor.click("#consult-form button[type=submit]");
  out.network = { notice: await notice(doctor), question: await doctor.inputValue("input[name=question]") };
  await doctor.unroute("**/fhir/ServiceRequest/$request-consultation");

  // 3. the expert's slot is taken meanwhile (the expert marks it busy): the server's refusal,
  // in Chinese; the slots reload and the form keeps its text
  await expert.evaluate(async slot => {
    const key = JSON.parse(sessionStorage.getItem("SMART_KEY"));
    const state = JSON.parse(sessionStorage.getItem(key));
    const headers = { Authorization: `Bearer ${state.tokenResponse.access_token}`, "Content-Type": "application/fhir+json" };
    const url = `${state.serverUrl}/Slot/${slot}`;
    const found = await (await fetch(url, { headers })).json();
    found.status = "busy";
    await fetch(url, { method: "PUT", headers, body: JSON.stringify(found) });
  }, slots[0]);
  await doctor.click("#consult-form button[type=submit]");
  out.slotTaken = { notice: await notice(doctor), question: await doctor.inputValue("input[name=question]") };
  await doctor.waitForFunction(s => !document.querySelector(`#cslots input[value="${s}"]`), slots[0], { timeout: STEP });

  // 4. sent without a booking: the expert sets the time
  await doctor.check("#cslots input[name=slot][value='']");
  await doctor.click("#consult-form button[type=submit]");
  await stage(doctor, "requested");
  const taskId = doctor.url().split("/").pop();
  out.requested = { task: taskId, experts: await text(doctor, "#cexperts"), question: await text(doctor, "#cquestion") };

  // the expert sees it arrive without reloading; accepts; schedules one of their free slots
  await expert.waitForSelector(`#clist-incoming a[data-task="${taskId}"]`, { timeout: STEP });
  out.arrival = await text(expert, ".notice");
  await shot(expert, "consult-incoming-1366", { top: true });
  await expert.click(`#clist-incoming a[data-task="${taskId}"]`);
  await expert.waitForSelector('[data-action="cact.accept"]', { timeout: STEP });
  await expert.click('[data-action="cact.accept"]');
  await stage(expert, "accepted");
  await expert.click('[data-action="cact.schedule"]');
  await expert.waitForSelector("#cdialog select[name=slot] option:nth-child(2)", { timeout: STEP, state: "attached" });
  const chosen = await expert.$eval("#cdialog select[name=slot] option:nth-child(2)", o => o.value);
  await expert.selectOption("#cdialog select[name=slot]", chosen);
  await expert.click("#cdialog button");
  await stage(expert, "scheduled");
  out.scheduled = { time: await text(expert, "#ctime"), slot: chosen };

  // the session on the expert's calendar (the week holding it)
  const offset = await expert.evaluate(() => {
    const start = new Date(document.querySelector("#ctime").textContent.slice(0, 16).replace(" ", "T"));
    const monday = new Date(); monday.setHours(0, 0, 0, 0); monday.setDate(monday.getDate() - ((monday.getDay() + 6) % 7));
    return Math.floor((start - monday) / (7 * 864e5));
  });
  await expert.goto(`${config.origin}/apps/workbench/index.html#/calendar/${offset}`);
  await expert.waitForSelector("#view[data-sessions]", { timeout: STEP });
  out.calendar = await expert.$$eval(".event.session", all => all.map(a => a.getAttribute("href")));
  await shot(expert, "consult-calendar-1366", { top: true });

  // the session starts; both enter the room and decode each other's video
  await expert.goto(`${config.origin}/apps/workbench/index.html#/consultation/${taskId}`);
  await expert.waitForSelector('[data-action="cact.start"]', { timeout: STEP });
  await expert.click('[data-action="cact.start"]');
  await stage(expert, "in-progress");
  await doctor.goto(`${config.origin}/apps/workbench/index.html#/consultation/${taskId}`);
  await stage(doctor, "in-progress");
  for (const page of [expert, doctor]) {
    await page.click('[data-action="cact.join"]');
    await page.waitForSelector("#room-dock iframe", { timeout: STEP });
  }
  for (const page of [expert, doctor]) {
    const started = Date.now();
    for (;;) {
      const s = await roomState(page).catch(() => null);
      if (s && s.connected >= 1 && s.framesDecoded > 10) break;
      if (Date.now() - started > VIDEO) throw new Error(`${page.name}: no video decoded: ${JSON.stringify(s)}`);
      await page.waitForTimeout(250);
    }
  }
  out.room = { expert: await roomState(expert), doctor: await roomState(doctor) };

  // messages both ways: text from the doctor; a reply with an attachment from the expert
  await doctor.fill("#message-text", "患者今日胸痛再发，已附心电图");
  await doctor.click("#send-message");
  await doctor.waitForSelector("#thread li[data-message]", { timeout: STEP });
  await expert.waitForSelector("#thread li[data-message]", { timeout: STEP });
  await expert.fill("#message-text", "收到，请补充肌钙蛋白结果");
  await expert.setInputFiles("#message-file", { name: "ecg.txt", mimeType: "text/plain", buffer: Buffer.from("ST-depression 0.1 mV V4-V6") });
  await expert.click("#send-message");
  await doctor.waitForFunction(() => document.querySelectorAll("#thread li[data-message]").length >= 2, null, { timeout: STEP });
  // the expert has read the doctor's message: the doctor sees 已读
  await doctor.waitForFunction(() => (document.querySelector("#thread li.mine .read") || {}).textContent === "已读", null, { timeout: STEP });
  out.thread = {
    doctor: await doctor.$$eval("#thread li", all => all.map(li => li.innerText)),
    expert: await expert.$$eval("#thread li", all => all.map(li => li.innerText)),
  };
  await shot(doctor, "consult-room-1366", { top: true });

  // the expert writes the opinion (the opinion itself is required), submits and signs it
  await expert.click("#tab-write");
  await expert.waitForSelector("#opinion-form textarea[name=opinion]", { timeout: STEP });
  await expert.fill("#opinion-form textarea[name=opinion]", "");
  await expert.click("#submit-opinion");
  out.opinionEmpty = await notice(expert);
  await expert.fill("#opinion-form textarea[name=findings]", "心电图示V4-V6导联ST段压低0.1mV");
  await expert.fill("#opinion-form textarea[name=opinion]", "考虑不稳定型心绞痛");
  await expert.fill("#opinion-form textarea[name=recommendations]", "建议冠脉造影，必要时上转");
  await shot(expert, "consult-opinion-1366", { top: true });
  await expert.click("#submit-opinion");
  await stage(expert, "opinion-drafted");
  await expert.click("#tab-write");
  await expert.waitForSelector("#sign-opinion", { timeout: STEP });
  await expert.click("#sign-opinion");
  await stage(expert, "completed");

  // the requester sees the signed opinion (without reloading) and its printable form
  await stage(doctor, "completed");
  await doctor.click("#tab-opinion");
  await doctor.waitForSelector("#opinion[data-status=final]", { timeout: STEP });
  out.signed = { opinion: await text(doctor, "#opinion"), leave: await doctor.isVisible("#room-dock") };
  await doctor.click('[data-action="cact.viewOpinion"]');
  const frame = await (await doctor.waitForSelector("#opinion-frame", { timeout: STEP })).contentFrame();
  await frame.waitForLoadState();
  out.signed.html = await frame.evaluate(() => document.body.innerText);
  const composition = await doctor.getAttribute("#opinion", "data-composition");
  out.signed.pdf = await doctor.evaluate(async id => {
    const key = JSON.parse(sessionStorage.getItem("SMART_KEY"));
    const state = JSON.parse(sessionStorage.getItem(key));
    const res = await fetch(`${state.serverUrl}/Composition/${id}/$consultation-opinion?format=pdf`,
      { headers: { Authorization: `Bearer ${state.tokenResponse.access_token}`, Accept: "application/pdf" } });
    const bytes = new Uint8Array(await res.arrayBuffer());
    return { status: res.status, magic: String.fromCharCode(...bytes.slice(0, 5)), composition: id };
  }, composition);
  await doctor.click("#tab-opinion");
  await shot(doctor, "consult-signed-1366", { top: true });
  // leave the room; the session record: its times and who attended
  await doctor.click("#leave-room");
  await expert.click("#leave-room");
  await doctor.click("#tab-session");
  await doctor.waitForSelector("#session-record", { timeout: STEP });
  out.session = { text: await text(doctor, "#session-record"), ended: await text(doctor, "#session-ended") };

  // the records list holds it
  await doctor.goto(`${config.origin}/apps/workbench/index.html#/consult/records`);
  await doctor.waitForSelector(`#clist-records a[data-task="${taskId}"]`, { timeout: STEP });
  await shot(doctor, "consult-records-1366", { top: true });

  // the doctor app: the same screens on a phone
  await doctor.setViewportSize(PHONE);
  await doctor.goto(`${config.origin}/apps/workbench/index.html#/consult/records`);
  await doctor.waitForSelector(`#clist-records a[data-task="${taskId}"]`, { timeout: STEP });
  await shot(doctor, "consult-list-390", { top: true });
  await doctor.goto(`${config.origin}/apps/workbench/index.html#/consultation/${taskId}/opinion`);
  await doctor.waitForSelector("#opinion[data-status=final]", { timeout: STEP });
  await shot(doctor, "consult-signed-390", { top: true });
  await doctor.goto(`${config.origin}/apps/workbench/index.html#/consult-new/${config.patient}`);
  await doctor.waitForSelector("#experts input[name=expert]", { timeout: STEP });
  await shot(doctor, "consult-form-390", { top: true });
  await expert.setViewportSize(PHONE);
  await expert.goto(`${config.origin}/apps/workbench/index.html#/calendar/${offset}`);
  await expert.waitForSelector("#view[data-sessions]", { timeout: STEP });
  await shot(expert, "consult-calendar-390", { top: true });
  out.phone = { bottomNav: await doctor.isVisible("nav.bottom"), sideNav: await doctor.isVisible("nav.side") };
  out.logs = Object.fromEntries([doctor, expert].map(p => [p.name, p.logs]));
}

run(journey, { prefix: "consult-", args: MEDIA_ARGS });
