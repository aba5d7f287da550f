// New work appears without reloading. For now the screen polls (every few seconds, a small
// search); SEAM: when websocket Subscriptions are served (the `subscriptions` work), replace the
// body of `watch` by a subscription on the same search (criteria = `query`) that calls
// `onChange` on each notification; the screens need not change.
const POLL_MS = 4000;

/** Call `check()` every few seconds while the screen is open; returns the stop function. */
export function watch(query, check) {
  let stopped = false;
  let timer = null;
  const tick = async () => {
    if (stopped) return;
    try { await check(query); } catch (e) { /* a failed poll waits for the next one */ }
    if (!stopped) timer = setTimeout(tick, POLL_MS);
  };
  timer = setTimeout(tick, POLL_MS);
  return () => { stopped = true; clearTimeout(timer); };
}
