// Drives the consortium's apps (apps/web, served by the server under /apps/) in headless
// Chromium through the referral journey of issue 16, as the people would, and prints what each
// screen showed as one JSON object. Run by tests/test_apps_browser.py:
//   node apps.mjs '{"origin": ..., "iss": ..., "launch": ..., "password": ..., "shots": ...}'
import { PC, PHONE, STEP, allow, config, fillReferral, open, run, shot, signIn, text } from "./lib.mjs";

async function waitBusiness(page, code) {
  await page.waitForSelector(`#view[data-business="${code}"]`, { timeout: STEP });
}

async function stats(page) {
  await page.goto(`${config.origin}/apps/workbench/index.html#/stats`);
  await page.waitForSelector(".kpi[data-direction=up]", { timeout: STEP });
  return page.$$eval(".kpi", all => Object.fromEntries(all.map(k => [k.dataset.direction,
    { submitted: Number(k.dataset.submitted), completed: Number(k.dataset.completed) }])));
}

async function journey(browser, out) {
  // the tertiary hospital's referral office (转诊办), standalone launch, worklist open
  const office = await open(browser, "office", { viewport: PC });
  await office.goto(`${config.origin}/apps/workbench/launch.html`);
  await signIn(office, "rc-hz-first");
  await office.waitForSelector("#list-incoming, .tabs", { timeout: STEP });
  out.statsBefore = await stats(office);
  await shot(office, "workbench-stats-1366");
  await office.goto(`${config.origin}/apps/workbench/index.html#/referrals/incoming`);
  await office.waitForSelector(".tabs", { timeout: STEP });
  await shot(office, "workbench-worklist-1366");
  let navigations = 0;
  office.on("framenavigated", f => { if (f === office.mainFrame()) navigations++; });

  // the community doctor: EHR launch on the EMR's patient
  const doctor = await open(browser, "doctor", { viewport: PC });
  const query = new URLSearchParams({ iss: config.iss, launch: config.launch });
  await doctor.goto(`${config.origin}/apps/workbench/launch.html?${query}`);
  await signIn(doctor, "dr-hubin-chc");
  await doctor.waitForSelector(".banner[data-patient]", { timeout: STEP });
  out.ehr = {
    url: doctor.url(),
    patient: await doctor.getAttribute(".banner[data-patient]", "data-patient"),
    banner: await text(doctor, ".banner"),
    title: await doctor.title(),
  };
  await shot(doctor, "workbench-record-1366");

  // the referral form from the launch patient
  await doctor.click("#new-referral");
  const slots = await fillReferral(doctor, {
    target: "hz-first", department: config.department, diagnosis: "高血压3级（极高危）", icd: "I10",
    reason: "血压控制不佳，联合三种降压药无效", history: "高血压病史10年",
  });
  await doctor.check(`input[name=slot][value="${slots[0]}"]`);
  await shot(doctor, "workbench-form-1366");

  // 1. the network fails: the message says so and what was typed stays
  await doctor.route("**/fhir/ServiceRequest", route => route.abort());
  await doctor.click("form button[type=submit]");
  await doctor.waitForSelector(".notice.error", { timeout: STEP });
  out.network = {
    notice: await text(doctor, ".notice"),
    reason: await doctor.inputValue("textarea[name=reason]"),
  };
  await doctor.unroute("**/fhir/ServiceRequest");

  // 2. someone else takes the slot meanwhile (the office marks it busy): refused, in Chinese
  await office.evaluate(async slot => {
    const key = JSON.parse(sessionStorage.getItem("SMART_KEY"));
    const state = JSON.parse(sessionStorage.getItem(key));
    const token = state.tokenResponse.access_token;
    const headers = { Authorization: `Bearer ${token}`, "Content-Type": "application/fhir+json" };
    const url = `${state.serverUrl}/Slot/${slot}`;
    const found = await (await fetch(url, { headers })).json();
    found.status = "busy";
    await fetch(url, { method: "PUT", headers, body: JSON.stringify(found) });
  }, slots[0]);
  await doctor.evaluate(() => { document.getElementById("notice").hidden = true; });
  await doctor.click("form button[type=submit]");
  await doctor.waitForSelector(".notice.error:not([hidden])", { timeout: STEP });
  out.slotTaken = { notice: await text(doctor, ".notice"), reason: await doctor.inputValue("textarea[name=reason]") };
  await doctor.waitForFunction(s => !document.querySelector(`input[name=slot][value="${s}"]`), slots[0], { timeout: STEP });

  // 3. another slot: submitted, booked pending the receiving hospital's review
  await doctor.check(`input[name=slot][value="${slots[1]}"]`);
  await doctor.click("form button[type=submit]");
  await waitBusiness(doctor, "booked-pending-review");
  const taskId = (await doctor.url()).split("/").pop();
  out.submitted = { task: taskId, number: await text(doctor, "#referral-number"), qr: await text(doctor, "#qr-payload") };
  await shot(doctor, "workbench-referral-1366");

  // the office sees it arrive without reloading, and accepts it (confirms the booking)
  await office.waitForSelector(`#list-incoming a[data-task="${taskId}"]`, { timeout: STEP });
  out.arrival = { navigations, notice: await text(office, ".notice") };
  await office.click(`#list-incoming a[data-task="${taskId}"]`);
  await office.waitForSelector('[data-action="act.accept"]', { timeout: STEP });
  await office.click('[data-action="act.accept"]');
  await waitBusiness(office, "booked");

  // check-in by the slip's code, typed as a scanner would
  await office.goto(`${config.origin}/apps/workbench/index.html#/checkin`);
  await office.fill("input[name=code]", out.submitted.qr);
  await office.click("form button[type=submit]");
  await office.waitForSelector("#do-checkin:not([disabled])", { timeout: STEP });
  await shot(office, "workbench-checkin-1366");
  await office.click("#do-checkin");
  await waitBusiness(office, "arrived");

  // completion with a down-referral to the sending community centre
  await office.click('[data-action="act.complete"]');
  await office.fill("textarea[name=down-reason]", "血压控制稳定，转回社区随访");
  await office.click("#dialog button");
  await waitBusiness(office, "down-referred");
  out.completed = { timeline: await text(office, "#timeline") };
  await shot(office, "workbench-completed-1366");
  out.statsAfter = await stats(office);

  // the language switch: English from our CodeSystems' designations
  await office.goto(`${config.origin}/apps/workbench/index.html#/referral/${taskId}`);
  await waitBusiness(office, "down-referred");
  // the switch re-renders the view: wait for a new status badge, not the Chinese one still shown
  await office.evaluate(() => document.querySelector(".status").setAttribute("data-before-switch", ""));
  await office.click("#lang");
  await office.waitForFunction(() => document.documentElement.lang === "en", null, { timeout: STEP });
  await office.waitForSelector("#view[data-business] .status:not([data-before-switch])", { timeout: STEP });
  out.english = { status: await text(office, ".status"), lang: await office.evaluate(() => document.documentElement.lang) };
  await office.click("#lang");

  // an expired session goes back through the launch and returns to the same screen
  await doctor.evaluate(() => {
    const key = JSON.parse(sessionStorage.getItem("SMART_KEY"));
    const state = JSON.parse(sessionStorage.getItem(key));
    state.expiresAt = 1;
    sessionStorage.setItem(key, JSON.stringify(state));
  });
  await doctor.goto(`${config.origin}/apps/workbench/index.html#/stats`);
  await doctor.reload(); // a new page load reads the (expired) state
  await allow(doctor); // signed in still (the server's session): only the consent again
  await doctor.waitForSelector(".kpi", { timeout: STEP });
  out.relaunch = { hash: await doctor.evaluate(() => location.hash) };

  // the doctor app: the same workbench on a phone
  const phone = await open(browser, "doctor-phone", { viewport: PHONE });
  await phone.goto(`${config.origin}/apps/workbench/launch.html`);
  await signIn(phone, "rc-hz-first");
  await phone.waitForSelector(".tabs", { timeout: STEP });
  await shot(phone, "doctor-worklist-390");
  await phone.goto(`${config.origin}/apps/workbench/index.html#/referral/${taskId}`);
  await waitBusiness(phone, "down-referred");
  await shot(phone, "doctor-referral-390");
  await phone.goto(`${config.origin}/apps/workbench/index.html#/stats`);
  await phone.waitForSelector(".kpi", { timeout: STEP });
  await shot(phone, "doctor-stats-390");
  out.phone = { bottomNav: await phone.isVisible("nav.bottom"), sideNav: await phone.isVisible("nav.side") };

  // the patient app: the patient's own referral and slip; another patient sees none of it
  const patient = await open(browser, "patient", { viewport: PHONE });
  await patient.goto(`${config.origin}/apps/patient/launch.html`);
  await signIn(patient, "pat-001");
  await patient.waitForSelector("#my-referrals", { timeout: STEP });
  await shot(patient, "patient-home-390");
  out.patient = { referrals: await text(patient, "#my-referrals"), me: await text(patient, "#me") };
  await patient.click(`#my-referrals [data-number="${out.submitted.number}"] button`);
  const frame = await (await patient.waitForSelector("#slip iframe", { timeout: STEP })).contentFrame();
  await frame.waitForSelector("[data-qr] svg", { timeout: STEP });
  out.patient.slipQr = await frame.getAttribute("[data-qr]", "data-qr");
  await patient.$eval("#slip", el => el.scrollIntoView());
  await shot(patient, "patient-slip-390");

  const other = await open(browser, "other-patient", { viewport: PHONE });
  await other.goto(`${config.origin}/apps/patient/launch.html`);
  await signIn(other, "pat-002");
  await other.waitForSelector("#my-referrals", { timeout: STEP });
  out.other = { referrals: await text(other, "#my-referrals"), me: await text(other, "#me"),
    body: await other.evaluate(() => document.body.innerText) };
  await shot(other, "patient-other-390");

  // the patient app on a PC, and the workbench's record view on a phone
  const patientPc = await open(browser, "patient-pc", { viewport: PC });
  await patientPc.goto(`${config.origin}/apps/patient/launch.html`);
  await signIn(patientPc, "pat-001");
  await patientPc.waitForSelector("#my-referrals", { timeout: STEP });
  await shot(patientPc, "patient-home-1366");
  await phone.goto(`${config.origin}/apps/workbench/index.html#/record/${out.ehr.patient}`);
  await phone.waitForSelector(".banner[data-patient]", { timeout: STEP });
  await shot(phone, "doctor-record-390");
  await phone.click("#new-referral");
  await phone.waitForSelector("form select[name=target]", { timeout: STEP });
  await shot(phone, "doctor-form-390");
  // a record the consortium rule hides (or that does not exist: the server answers alike)
  await phone.goto(`${config.origin}/apps/workbench/index.html#/record/${config.hiddenPatient}`);
  await phone.waitForSelector("#record-hidden", { timeout: STEP });
  out.hidden = await text(phone, "#record-hidden");
  await phone.goto(`${config.origin}/apps/workbench/index.html#/checkin`);
  await phone.waitForSelector("input[name=code]", { timeout: STEP });
  await shot(phone, "doctor-checkin-390");
  out.logs = Object.fromEntries([office, doctor, phone, patient, other].map(p => [p.name, p.logs.filter(l => /error/i.test(l))]));
}

run(journey);
