/**
 * A JSON object: not null, not an array. Shared by the configuration, the ledger's readers and the path-style
 * migration, which must not import the configuration module (and ajv with it) to ask it.
 */
export function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
