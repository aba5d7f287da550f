// 扫码报到: check-in by the slip's QR code (it carries `Task/{id}`), read by the camera where
// the browser has BarcodeDetector, or typed (a QR payload or the 转诊单号).
import { t } from "../lib/i18n.js";
import { NUMBER, number, statusBadge } from "../lib/referral.js";
import { h, field, nameOf, notify, showError } from "../lib/ui.js";

async function findTask(api, code) {
  code = code.trim();
  const id = code.match(/Task\/([A-Za-z0-9\-.]{1,64})/);
  if (id) return api.request(`Task/${id[1]}`);
  const srs = await api.search(`ServiceRequest?identifier=${encodeURIComponent(`${NUMBER}|${code}`)}`, 1);
  if (!srs.length) throw Object.assign(new Error(t("err.notFound")), { detail: code });
  const tasks = await api.search(`Task?focus=ServiceRequest/${srs[0].id}&_sort=-_lastUpdated`, 1);
  if (!tasks.length) throw Object.assign(new Error(t("err.notFound")), { detail: code });
  return tasks[0];
}

export async function checkin(ctx, view) {
  const { api } = ctx;
  const input = h("input", { name: "code", autocomplete: "off", inputmode: "text" });
  const result = h("div", { id: "checkin-result" });
  const video = h("video", { class: "scan", hidden: true, muted: true, playsinline: true });
  const find = async () => {
    try {
      const task = await findTask(api, input.value);
      const [sr, patient] = await Promise.all([api.request(task.focus.reference), api.request(task.for.reference)]);
      const go = h("button", { type: "button", id: "do-checkin" }, t("act.checkin"));
      go.disabled = task.status !== "accepted";
      go.addEventListener("click", async () => {
        go.disabled = true;
        try {
          await api.operation(`Task/${task.id}/$check-in`);
          notify(t("checkin.done"));
          location.hash = `#/referral/${task.id}`;
        } catch (e) { showError(e); go.disabled = false; }
      });
      result.replaceChildren(h("section", { class: "card" },
        h("p", {}, h("strong", {}, nameOf(patient)), ` · ${number(sr)} · `, statusBadge(task)), go));
    } catch (e) { showError(e); }
  };
  const scan = async () => {
    if (!("BarcodeDetector" in window) || !navigator.mediaDevices) { notify(t("checkin.noCamera"), "error"); return; }
    try {
      const detector = new BarcodeDetector({ formats: ["qr_code"] });
      const stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" } });
      video.srcObject = stream; video.hidden = false; await video.play();
      const stop = () => { stream.getTracks().forEach(x => x.stop()); video.hidden = true; };
      ctx.stop.push(stop);
      const look = async () => {
        if (video.hidden) return;
        const codes = await detector.detect(video).catch(() => []);
        if (codes.length) { input.value = codes[0].rawValue; stop(); await find(); } else requestAnimationFrame(look);
      };
      look();
    } catch (e) { notify(t("checkin.noCamera"), "error", String(e.message || e)); }
  };
  const form = h("form", { class: "card", onsubmit: e => { e.preventDefault(); find(); } },
    field(t("checkin.code"), input, { required: true, hint: t("checkin.hint") }),
    h("div", { class: "row" }, h("button", { type: "submit" }, t("act.find")),
      h("button", { type: "button", class: "secondary", onclick: scan }, t("act.scan"))), video);
  view.replaceChildren(h("h2", {}, t("nav.checkin")), form, result);
  input.focus();
}
