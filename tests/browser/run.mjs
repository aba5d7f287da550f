// Drives client-js (npm fhirclient) in headless Chromium through a SMART EHR launch and a
// standalone launch with the patient picker, as a person would, and prints what the app page
// saw as one JSON object. Run by tests/test_browser_smart.py:
//   node run.mjs '{"app": ..., "iss": ..., "clientId": ..., "launch": ..., ...}'
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
// Debian's chromium, never a downloaded one (`npx playwright install` needs the internet),
// quiet and offline: lib.mjs holds both
import { ARGS, CHROMIUM, config } from "./lib.mjs";

const STEP = 15000; // ms for any one page to appear

/** Title, language and visible text of a page, for the test's assertions. */
async function describe(page) {
  return page.evaluate(() => ({
    url: location.href,
    title: document.title,
    lang: document.documentElement.lang,
    text: document.body.innerText,
  }));
}

/** Whether the Chinese in the page's title renders as glyphs: two different characters drawn
 * alike are the "tofu" boxes of a missing font (the page is then illegible in Chinese). */
async function chineseRendered(page) {
  return page.evaluate(() => {
    const chars = [...new Set(document.title.match(/[\u4e00-\u9fff]/g) || [])].slice(0, 2);
    if (chars.length < 2) return false;
    const font = getComputedStyle(document.querySelector("h1") || document.body).font;
    const pixels = ch => {
      const canvas = document.createElement("canvas");
      canvas.width = canvas.height = 64;
      const g = canvas.getContext("2d");
      g.font = font;
      g.fillText(ch, 4, 48);
      return g.getImageData(0, 0, 64, 64).data.join();
    };
    return pixels(chars[0]) !== pixels(chars[1]);
  });
}

/** Sign in on the login page (fields `username`, `password`); a screenshot first. */
async function signIn(page, shot) {
  await page.waitForSelector('input[name="password"]', { timeout: STEP });
  await page.screenshot({ path: shot, fullPage: true });
  const seen = { ...(await describe(page)), chinese: await chineseRendered(page) };
  await page.fill('input[name="username"]', config.username);
  await page.fill('input[name="password"]', config.password);
  await Promise.all([page.waitForNavigation({ timeout: STEP }), page.click('button[type="submit"]')]);
  return seen;
}

/** Approve on the consent page (the button submitting `approve=yes`). */
async function approve(page) {
  await page.waitForSelector('button[name="approve"][value="yes"]', { timeout: STEP });
  const seen = await describe(page);
  await page.click('button[name="approve"][value="yes"]');
  return seen;
}

/** What the app page wrote into #out once client-js is done. */
async function appResult(page) {
  await page.waitForSelector('#out[data-done="yes"]', { timeout: STEP });
  return JSON.parse(await page.textContent("#out"));
}

/** One launch in a fresh browser context (no session cookie); on failure, where it stopped. */
async function flow(browser, name, steps) {
  const page = await (await browser.newContext()).newPage();
  const logs = [];
  page.on("console", m => logs.push(m.text()));
  page.on("pageerror", e => logs.push(String(e)));
  try {
    return await steps(page);
  } catch (e) {
    await page.screenshot({ path: join(config.shots, `${name}-failed.png`) }).catch(() => {});
    const where = await describe(page).catch(() => null);
    throw new Error(`${name}: ${e.message}\nat ${JSON.stringify(where)}\nconsole: ${logs}`);
  }
}

async function ehrLaunch(page) {
  const query = new URLSearchParams({
    iss: config.iss, launch: config.launch, client_id: config.clientId, other: config.ehrOther,
  });
  await page.goto(`${config.app}/launch.html?${query}`);
  const login = await signIn(page, join(config.shots, "login.png"));
  const consent = await approve(page);
  return { login, consent, app: await appResult(page) };
}

async function standaloneLaunch(page) {
  const query = new URLSearchParams({
    iss: config.iss, client_id: config.clientId, other: config.standaloneOther,
  });
  await page.goto(`${config.app}/launch.html?${query}`);
  const login = await signIn(page, join(config.shots, "login-standalone.png"));
  await page.waitForSelector('input[name="patient"]', { timeout: STEP });
  await page.screenshot({ path: join(config.shots, "picker.png"), fullPage: true });
  const picker = { ...(await describe(page)), chinese: await chineseRendered(page) };
  picker.choices = await page.$$eval('input[name="patient"]', inputs => inputs.map(i => i.value));
  await page.check(`input[name="patient"][value="${config.standalonePatient}"]`);
  await Promise.all([page.waitForNavigation({ timeout: STEP }), page.click('button[type="submit"]')]);
  const consent = await approve(page);
  return { login, picker, consent, app: await appResult(page) };
}

async function main() {
  mkdirSync(config.shots, { recursive: true });
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS });
  try {
    const result = {
      ehr: await flow(browser, "ehr", ehrLaunch),
      standalone: await flow(browser, "standalone", standaloneLaunch),
    };
    process.stdout.write(JSON.stringify(result) + "\n");
  } finally {
    await browser.close();
  }
}

main().catch(e => {
  process.stdout.write(JSON.stringify({ error: String(e && e.stack || e) }) + "\n");
  process.exit(1);
});
