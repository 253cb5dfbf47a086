// What a page may know of the device without its engine: the SDK's name and version (sent
// at the handshake) and the nine `Connection.Sync` states a status can be in. A page imports
// these from here, so that its bundle leaves the engine (and SQLite) to the worker.

export const SDK_VERSION = "@fieldsync/device 0.1.0";
export const SYNC_STATES = /** @type {const} */ ([
  "Connected",
  "ConnectedWithWarning",
  "ConnectedPendingUpsync",
  "ConnectedError",
  "ConnectedRefresh",
  "NotConnected",
  "NotConnectedWithWarning",
  "NotConnectedPendingUpsync",
  "NotConnectedSyncError",
]);
