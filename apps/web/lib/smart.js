// SMART App Launch with npm fhirclient (vendor/fhir-client.pure.min.js, global FHIR): EHR launch
// (iss + launch: opens on the EHR's patient) and standalone launch, PKCE S256 required. Then
// every FHIR request goes through `Api`, which turns refusals into messages in the user's
// language and sends an expired session back through the launch.
import { t } from "./i18n.js";

const ISS = "yl-iss";
const RETURN = "yl-return"; // the screen to reopen after signing in again

/** launch.html: start the authorization request (scopes per launch kind). */
export async function launch(clientId, scopes) {
  const query = new URLSearchParams(location.search);
  const iss = query.get("iss") || sessionStorage.getItem(ISS) || `${location.origin}/fhir`;
  sessionStorage.setItem(ISS, iss);
  const ehr = query.has("launch");
  await FHIR.oauth2.authorize({
    clientId,
    iss,
    launch: ehr ? query.get("launch") : undefined,
    scope: ehr ? scopes.ehr : scopes.standalone,
    redirectUri: "index.html",
    pkceMode: "required", // S256; the server refuses `plain` and requests without PKCE
  });
}

/** index.html: finish the launch (or resume it on reload); an Api, or null while leaving to
 * sign in again. */
export async function ready() {
  try {
    const client = await FHIR.oauth2.ready();
    return new Api(client);
  } catch (e) {
    relaunch();
    return null;
  }
}

/** Back through the launch (standalone, on the same FHIR server), remembering the screen. */
export function relaunch() {
  sessionStorage.setItem(RETURN, location.hash || "");
  const iss = sessionStorage.getItem(ISS) || `${location.origin}/fhir`;
  location.assign(`launch.html?iss=${encodeURIComponent(iss)}`);
}

/** The screen that was open when the session expired (once). */
export function takeReturn() {
  const found = sessionStorage.getItem(RETURN);
  sessionStorage.removeItem(RETURN);
  return found;
}

export class AppError extends Error {
  constructor(status, message, detail) {
    super(message);
    this.status = status;
    this.detail = detail || "";
  }
}

/** A FHIR OperationOutcome (or none) as a message in the user's language, the server's own
 * text kept as the detail. */
export function outcomeMessage(status, outcome) {
  const issue = (outcome && outcome.issue && outcome.issue[0]) || {};
  const detail = issue.diagnostics || (issue.details && issue.details.text) || "";
  const where = (issue.expression || [])[0] || "";
  let key = "err.server";
  if (/is not free|not open for booking/.test(detail) || (where === "slot" && status === 409)) key = "err.slotTaken";
  else if (issue.code === "business-rule" || /not allowed from Task status/.test(detail)) key = "err.transition";
  else if (issue.code === "required") key = "err.required";
  else if (status === 403 || issue.code === "forbidden" || issue.code === "security") key = "err.denied";
  else if (status === 404) key = "err.notFound";
  else if (status === 400 || status === 422 || issue.code === "invalid") key = "err.invalid";
  return new AppError(status, t(key), [detail, where && `(${where})`].filter(Boolean).join(" "));
}

export class Api {
  constructor(client) {
    this.client = client;
    this.base = client.state.serverUrl.replace(/\/$/, "");
    this.patientId = client.patient.id || null;
    const token = client.state.tokenResponse || {};
    this.fhirUser = (client.getFhirUser && client.getFhirUser()) || token.fhirUser || null;
  }

  get token() { return this.client.state.tokenResponse.access_token; }

  /** GET/POST/PUT a FHIR path or absolute URL; the parsed JSON (or text for `raw`);
   * `keepalive`: the request outlives the page (sent as it closes). */
  async request(path, { method = "GET", body, raw = false, accept, keepalive = false } = {}) {
    const expiresAt = this.client.state.expiresAt;
    if (expiresAt && expiresAt * 1000 < Date.now()) {
      relaunch();
      throw new AppError(401, t("err.expired"));
    }
    const url = /^https?:/.test(path) ? path : `${this.base}/${path}`;
    const headers = { Authorization: `Bearer ${this.token}`, Accept: accept || "application/fhir+json" };
    if (body !== undefined) headers["Content-Type"] = "application/fhir+json";
    let res;
    try {
      res = await fetch(url, { method, headers, keepalive, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (e) {
      throw new AppError(0, t("err.network"));
    }
    if (res.status === 401) {
      relaunch();
      throw new AppError(401, t("err.expired"));
    }
    if (raw && res.ok) return res;
    const text = await res.text();
    let json = null;
    try { json = text ? JSON.parse(text) : null; } catch (e) { json = null; }
    if (!res.ok) throw outcomeMessage(res.status, json);
    return json;
  }

  /** Every resource of a search (following `next` up to `pages` pages). */
  async search(path, pages = 5) {
    let bundle = await this.request(path);
    const out = [...(bundle.entry || [])];
    while (--pages > 0) {
      const next = (bundle.link || []).find(l => l.relation === "next");
      if (!next) break;
      bundle = await this.request(next.url);
      out.push(...(bundle.entry || []));
    }
    return out.map(e => e.resource);
  }

  /** An operation: POST a Parameters body. */
  operation(path, parameters = []) {
    return this.request(path, { method: "POST", body: { resourceType: "Parameters", parameter: parameters } });
  }
}
