// New work appears without reloading: R4 Subscriptions on the websocket channel (README,
// Subscriptions). `watch` creates one Subscription per search (channel websocket, ending in
// 8 h so that one a crashed tab leaves behind turns itself off), binds them on one socket (the
// access token in the URL: a browser cannot set a websocket's headers) and calls `onChange` on
// each ping, and once when bound (what was written while the screen loaded sent no ping);
// leaving the screen or closing the page deletes them. A dropped socket reconnects with
// back-off (and `onChange` runs again once bound); where Subscriptions or the websocket are
// not served, the screen polls instead.
const POLL_MS = 4000;
const HOURS = 8;
const WEBSOCKET_EXT = "http://hl7.org/fhir/StructureDefinition/capabilitystatement-websocket";
const MAX_DELAY_MS = 30000;
// connections that never bind before the screen gives up and polls
const MAX_FAILURES = 5;

let socketUrl = null; // the CapabilityStatement's, once per page

async function websocketUrl(api) {
  if (socketUrl === null) {
    const cap = await api.request("metadata");
    const ext = ((cap.rest || [])[0] || {}).extension || [];
    socketUrl = (ext.find(e => e.url === WEBSOCKET_EXT) || {}).valueUri || "";
  }
  return socketUrl;
}

/** Call `onChange(active)` whenever something matching `criteria` ("Type?search", or several)
 * is written, while the screen is open; returns the stop function (ctx.stop). A call under way
 * when the screen is left finishes: it checks `active()` after each wait and draws nothing once
 * that is false (the view is another screen's by then). */
export function watch(api, criteria, onChange) {
  const searches = Array.isArray(criteria) ? criteria : [criteria];
  let stopped = false;
  let socket = null;
  let timer = null;
  let ids = [];
  let delay = 1000;
  let failures = 0;
  let running = null;
  let again = false;

  // one onChange at a time; pings meanwhile make one more run
  const changed = async () => {
    if (running) { again = true; return; }
    do {
      again = false;
      running = Promise.resolve().then(() => onChange(() => !stopped)).catch(() => { /* the next ping retries */ });
      await running;
    } while (again && !stopped);
    running = null;
  };

  const poll = () => {
    if (stopped) return;
    const tick = async () => {
      if (stopped) return;
      await changed();
      if (!stopped) timer = setTimeout(tick, POLL_MS);
    };
    timer = setTimeout(tick, POLL_MS);
  };

  const connect = url => {
    if (stopped) return;
    let bound = false;
    socket = new WebSocket(`${url}?access_token=${encodeURIComponent(api.token)}`);
    socket.onopen = () => ids.forEach(id => socket.send(`bind ${id}`));
    socket.onmessage = event => {
      const [kind, id] = String(event.data).split(" ");
      if (kind === "bound" && !bound) {
        // what was written between the screen's load (or the drop) and now sent no ping here
        bound = true;
        changed();
        failures = 0;
        delay = 1000;
      } else if (kind === "ping" && ids.includes(id)) {
        changed();
      } else if (kind === "error") {
        leave(); // not bindable (ended, deleted): keep the screen current by polling
        poll();
      }
    };
    socket.onclose = event => {
      if (stopped || socket === null) return;
      socket = null;
      // 4401: the token expired (or was revoked); a request finds out and signs in again
      if (event.code === 4401) changed();
      if (++failures > MAX_FAILURES) { poll(); return; }
      timer = setTimeout(() => connect(url), delay);
      delay = Math.min(delay * 2, MAX_DELAY_MS);
    };
  };

  const leave = () => {
    const open = socket;
    socket = null;
    if (open) open.close();
    for (const id of ids) api.request(`Subscription/${id}`, { method: "DELETE", keepalive: true }).catch(() => {});
    ids = [];
  };

  (async () => {
    try {
      const url = await websocketUrl(api);
      if (!url || typeof WebSocket === "undefined") throw new Error("no websocket channel");
      const end = new Date(Date.now() + HOURS * 3600 * 1000).toISOString();
      for (const search of searches) {
        const sub = await api.request("Subscription", { method: "POST", body: {
          resourceType: "Subscription", status: "requested", reason: "工作台实时提醒 (workbench)",
          criteria: search, end, channel: { type: "websocket" },
        } });
        ids.push(sub.id);
        if (stopped) { leave(); return; }
      }
      connect(url);
    } catch (e) {
      leave();
      poll(); // no Subscriptions here (refused): poll as before
    }
  })();

  const stop = () => {
    stopped = true;
    clearTimeout(timer);
    window.removeEventListener("pagehide", stop);
    leave();
  };
  window.addEventListener("pagehide", stop); // the tab closes or the page is left: delete too
  return stop;
}
