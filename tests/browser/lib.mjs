// What the browser scripts share: the configuration the Python test passes and headless
// Chromium's flags (all of them, run.mjs and ohif.mjs too); for the journeys (apps.mjs,
// consult.mjs, consult-room.mjs, apps-live.mjs) also the screenshots, signing in on the
// server's pages, a page per person, and the run that prints one JSON object (or the error,
// with a screenshot of every page).
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

/** The Python test's settings: node <script>.mjs '<JSON>' */
export const config = JSON.parse(process.argv[2]);
export const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
export const ARGS = [
  "--disable-gpu", "--disable-background-networking", "--disable-component-update",
  "--disable-sync", "--no-first-run", "--disable-quic",
];
/** For video: a camera and a microphone that exist without hardware, granted without a
 * prompt; plain host candidates (no mDNS names, which a sandbox without avahi cannot resolve). */
export const MEDIA_ARGS = [
  ...ARGS,
  "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
  "--autoplay-policy=no-user-gesture-required",
  "--disable-features=WebRtcHideLocalIpsWithMdns",
];
export const STEP = 20000;
export const PC = { width: 1366, height: 768 };
export const PHONE = { width: 390, height: 844 };

/** The screenshots taken, reported by `run`. */
export const shots = [];

export async function shot(page, name, { top = false } = {}) {
  if (top) await page.evaluate(() => window.scrollTo(0, 0));
  await page.waitForTimeout(200); // let the last render paint
  const path = join(config.shots, `${name}.png`);
  await page.screenshot({ path });
  shots.push(path);
}

export const text = (page, selector) => page.textContent(selector, { timeout: STEP });

/** Sign in and allow (the server's login and consent pages). */
export async function signIn(page, username) {
  await page.waitForSelector('input[name="password"]', { timeout: STEP });
  await page.fill('input[name="username"]', username);
  await page.fill('input[name="password"]', config.password);
  await Promise.all([page.waitForNavigation({ timeout: STEP }), page.click('button[type="submit"]')]);
  await allow(page);
}

/** Allow the app on the consent page (signed in already: the server's session). */
export async function allow(page) {
  await page.waitForSelector('button[name="approve"][value="yes"]', { timeout: STEP });
  await page.click('button[name="approve"][value="yes"]');
}

/** On the referral form (open on a patient): an outpatient up-referral to `target`'s
 * `department`, typed as a doctor would; the free slots offered, in the form's order (none
 * picked yet). */
export async function fillReferral(page, { target, department, diagnosis, icd, reason, history }) {
  await page.waitForSelector("form select[name=target]", { timeout: STEP });
  await page.selectOption("select[name=target]", target);
  await page.waitForFunction(() => document.querySelectorAll("select[name=department] option").length > 1, null, { timeout: STEP });
  await page.selectOption("select[name=department]", department);
  await page.waitForFunction(dept => {
    const slots = [...document.querySelectorAll("input[name=slot]")].filter(i => i.value);
    return slots.length > 2 && slots.every(i => i.parentElement.textContent.includes(dept));
  }, department, { timeout: STEP });
  await page.fill("input[name=diagnosis]", diagnosis);
  await page.fill("input[name=icd]", icd);
  await page.fill("textarea[name=reason]", reason);
  await page.fill("textarea[name=history]", history);
  return page.$$eval("input[name=slot]", all => all.map(i => i.value).filter(Boolean));
}

/** A person's page on a hospital's machine (Chinese, China Standard Time); `page.logs` keeps
 * script errors (a refused request is the server's answer, shown to the user, not one) and,
 * with `notFound`, the URLs answered 404. */
export async function open(browser, name, { viewport = PC, notFound = false } = {}) {
  const context = await browser.newContext({ viewport, locale: "zh-CN", timezoneId: "Asia/Shanghai" });
  const page = await context.newPage();
  page.logs = [];
  page.on("console", m => { if (m.type() === "error" && !/^Failed to load resource/.test(m.text())) page.logs.push(m.text()); });
  if (notFound) page.on("response", r => { if (r.status() === 404) page.logs.push(`404 ${r.url()}`); });
  page.on("pageerror", e => page.logs.push(String(e)));
  page.name = name;
  return page;
}

/** Launch Chromium, run `journey(browser, out)`, print `out` (with the screenshots) as one
 * JSON line; on a failure print the error and each page's URL and logs, and screenshot every
 * page as failed-<prefix><name>.png. */
export async function run(journey, { prefix = "", args = ARGS } = {}) {
  mkdirSync(config.shots, { recursive: true });
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args });
  const out = {};
  try {
    await journey(browser, out);
    out.shots = shots;
    process.stdout.write(JSON.stringify(out) + "\n");
  } catch (e) {
    for (const context of browser.contexts()) {
      for (const page of context.pages()) {
        await page.screenshot({ path: join(config.shots, `failed-${prefix}${page.name}.png`) }).catch(() => {});
      }
    }
    const pages = browser.contexts().flatMap(c => c.pages()).map(p => ({ name: p.name, url: p.url(), logs: p.logs }));
    process.stdout.write(JSON.stringify({ error: String(e && e.stack || e), pages, out }) + "\n");
    process.exitCode = 1;
  } finally {
    await browser.close();
  }
}
