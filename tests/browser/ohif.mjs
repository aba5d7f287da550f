// Opens OHIF (npm @ohif/app, prebuilt) in headless Chromium against our DICOMweb root, as a
// radiologist would: the study list, then the study in the viewer. Prints one JSON object:
// what the list showed, the DICOMweb requests and their statuses, and where the image
// viewport is on the viewer's screenshot (tests/test_ohif.py checks its pixels). With
// "login", OHIF is configured for our authorization server (oidc): the radiologist signs in on
// its login page first, and every DICOMweb request must carry the bearer token.
//   node ohif.mjs '{"viewer": ..., "study": ..., "shots": ..., "login": {"user", "password"}}'
import { chromium } from "playwright-core";
import { join } from "node:path";
import { ARGS as QUIET, CHROMIUM, config } from "./lib.mjs";

// OHIF draws with WebGL: a software GPU instead of none
const ARGS = [
  ...QUIET.filter(a => a !== "--disable-gpu"),
  "--use-gl=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist",
];
const STEP = 60000; // ms: OHIF loads about 200 MB of bundles and wasm from disk

const browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS });
const out = { requests: [], errors: [] };
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  page.on("response", async r => {
    if (r.url().includes("/dicom-web/") && r.request().method() !== "OPTIONS") {
      const auth = (await r.request().allHeaders())["authorization"] || "";
      out.requests.push({ url: r.url(), status: r.status(), type: r.headers()["content-type"],
        bearer: auth.startsWith("Bearer ") });
    }
  });
  page.on("pageerror", e => out.errors.push(String(e)));
  // 1. the study list
  await page.goto(`${config.viewer}/`, { waitUntil: "domcontentloaded", timeout: STEP });
  if (config.login) {
    // OHIF sends the browser to our /auth/authorize (code flow with PKCE): sign in there
    await page.waitForSelector('input[name="password"]', { timeout: STEP });
    out.loginPage = page.url();
    await page.fill('input[name="username"]', config.login.user);
    await page.fill('input[name="password"]', config.login.password);
    await Promise.all([page.waitForURL(u => u.toString().startsWith(config.viewer), { timeout: STEP }),
      page.click('button[type="submit"], input[type="submit"]')]);
  }
  await page.waitForFunction(
    s => document.body.innerText.includes(s), config.listed, { timeout: STEP });
  out.list = await page.evaluate(() => document.body.innerText);
  await page.screenshot({ path: join(config.shots, "list.png") });
  // 2. the study in the viewer: wait for the image to be drawn
  await page.goto(`${config.viewer}/viewer?StudyInstanceUIDs=${config.study}`,
    { waitUntil: "domcontentloaded", timeout: STEP });
  await page.waitForFunction(() => {
    const canvases = [...document.querySelectorAll("canvas")];
    return canvases.some(c => c.width > 200 && c.height > 200);
  }, null, { timeout: STEP });
  // frames arrive after the canvas: wait until the frame request was answered, then a moment
  const deadline = Date.now() + STEP;
  while (!out.requests.some(r => r.url.includes("/frames/")) && Date.now() < deadline) {
    await page.waitForTimeout(250);
  }
  await page.waitForTimeout(3000);
  out.viewport = await page.evaluate(() => {
    const canvases = [...document.querySelectorAll("canvas")]
      .map(c => c.getBoundingClientRect())
      .filter(r => r.width > 200 && r.height > 200)
      .sort((a, b) => b.width * b.height - a.width * a.height);
    const r = canvases[0];
    return { x: r.x, y: r.y, width: r.width, height: r.height };
  });
  out.viewerText = await page.evaluate(() => document.body.innerText);
  await page.screenshot({ path: join(config.shots, "viewer.png") });
} catch (e) {
  out.errors.push(String(e));
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
