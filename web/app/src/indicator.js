// @ts-check
/** The offline template's status icon: each of the nine `Connection.Sync` states as a glyph,
 * a short label and a tone, plus what a person wants to know next (pending changes, sync
 * errors, the last sync). The same table as the terminal app's `fieldapp/indicator.py`. */

/** @type {Record<string, { glyph: string, label: string, tone: string }>} */
export const INDICATORS = {
  Connected: { glyph: "●", label: "Online · synced", tone: "ok" },
  ConnectedWithWarning: { glyph: "▲", label: "Online · sync errors", tone: "warn" },
  ConnectedPendingUpsync: { glyph: "↑", label: "Online · changes to upload", tone: "info" },
  ConnectedError: { glyph: "✖", label: "Online · sync failed", tone: "bad" },
  ConnectedRefresh: { glyph: "⟳", label: "Online · syncing", tone: "info" },
  NotConnected: { glyph: "○", label: "Offline", tone: "off" },
  NotConnectedWithWarning: { glyph: "△", label: "Offline · sync errors", tone: "warn" },
  NotConnectedPendingUpsync: { glyph: "↑", label: "Offline · changes waiting", tone: "pending" },
  NotConnectedSyncError: { glyph: "✖", label: "Offline · sync failed", tone: "bad" },
};

/** @param {string} state */
export function indicator(state) {
  return INDICATORS[state] || { glyph: "?", label: state, tone: "off" };
}

/**
 * When the device last synced, as a person says it.
 * @param {string | number | null | undefined} last an ISO time or epoch milliseconds
 * @param {number} [now]
 */
export function ago(last, now = Date.now()) {
  if (last === null || last === undefined || last === "") return "never";
  const then = typeof last === "number" ? last : Date.parse(String(last));
  if (Number.isNaN(then)) return "never";
  const seconds = Math.max(0, Math.floor((now - then) / 1000));
  if (seconds < 60) return "just now";
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return `${Math.floor(seconds / 86400)} d ago`;
}

/**
 * One line for the status bar.
 * @param {{ state: string, pending?: number, errors?: number, lastSync?: any }} status
 * @param {{ glyph?: boolean }} [options] leave the glyph out where it is drawn on its own
 */
export function describe(status, { glyph = true } = {}) {
  const mark = indicator(status.state);
  const parts = [glyph ? `${mark.glyph} ${mark.label}` : mark.label];
  if (status.pending) parts.push(`${status.pending} pending`);
  if (status.errors) parts.push(`${status.errors} sync error${status.errors === 1 ? "" : "s"}`);
  parts.push(`last sync ${ago(status.lastSync)}`);
  return parts.join(" · ");
}
