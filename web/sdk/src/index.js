// @fieldsync/device: placeholder entry point, replaced by the engine.
export const VERSION = "0.1.0";
