// Two participants join one Appointment's video room through /apps/consult-room in headless
// Chromium (fake camera and microphone), connect over loopback and must each decode the
// other's video; one of them records and uploads; a third page, holding a token for another
// Appointment, must be refused. Prints what was seen as one JSON object. Run by
// tests/test_consult_room_browser.py:
//   node consult-room.mjs '{"first": URL, "second": URL, "foreign": URL, "shots": DIR}'
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { CHROMIUM, MEDIA_ARGS, config } from "./lib.mjs";

const WAIT = 45000;

const state = (page) => page.evaluate(() => window.consultRoom && window.consultRoom.state());

async function main() {
  mkdirSync(config.shots, { recursive: true });
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: MEDIA_ARGS });
  const seen = { errors: [] };
  const open = async (name, url) => {
    const page = await (await browser.newContext()).newPage();
    page.on("pageerror", (e) => seen.errors.push(`${name}: ${e.message}`));
    await page.goto(url);
    return page;
  };
  try {
    const first = await open("first", config.first);
    const second = await open("second", config.second);
    // both decode the other's video
    for (const page of [first, second]) {
      await page.waitForFunction(() => {
        const s = window.consultRoom && window.consultRoom.state();
        return s && s.connected >= 1 && s.framesDecoded > 10;
      }, null, { timeout: WAIT, polling: 250 });
    }
    seen.first = await state(first);
    seen.second = await state(second);
    seen.status = await first.textContent("#status");
    await first.screenshot({ path: join(config.shots, "consult-room.png"), fullPage: true });
    // the third, with another Appointment's token, is closed (and told why)
    const foreign = await open("foreign", config.foreign);
    await foreign.waitForFunction(() => window.consultRoom && window.consultRoom.closeCode(),
                                  null, { timeout: WAIT });
    seen.foreign = { closeCode: await foreign.evaluate(() => window.consultRoom.closeCode()),
                     status: await foreign.textContent("#status") };
    seen.afterForeign = await state(first);
    // a recording of two seconds, uploaded
    await first.evaluate(() => window.consultRoom.record());
    await first.waitForTimeout(2000);
    await first.evaluate(() => window.consultRoom.record());
    await first.waitForFunction(() => window.consultRoom.lastUpload(), null, { timeout: WAIT });
    seen.upload = await first.evaluate(() => window.consultRoom.lastUpload());
    // the second leaves: the first sees nobody
    await second.evaluate(() => window.consultRoom.leave());
    await first.waitForFunction(() => window.consultRoom.state().peers === 0, null, { timeout: WAIT });
    seen.afterLeave = await state(first);
  } catch (e) {
    seen.failure = String(e);
    for (const [i, page] of browser.contexts().map((c) => c.pages()[0]).entries()) {
      if (page) await page.screenshot({ path: join(config.shots, `failed-${i}.png`) }).catch(() => {});
      if (page) seen[`state${i}`] = await state(page).catch(() => null);
    }
  } finally {
    await browser.close();
  }
  console.log(JSON.stringify(seen));
}

main();
