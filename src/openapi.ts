import { readFileSync } from 'node:fs';
import { Ajv2020, type ErrorObject, type ValidateFunction } from 'ajv/dist/2020.js';
import type { ValidationIssue } from './errors.js';

/** A JSON Schema node as found in an OpenAPI 3.1 document (only what the mapper reads). */
interface SchemaNode {
  type?: string | string[];
  properties?: Record<string, SchemaNode>;
  oneOf?: SchemaNode[];
  anyOf?: SchemaNode[];
  pattern?: string;
  maxLength?: number;
  minLength?: number;
  $ref?: string;
  'x-zod-type'?: string;
}

export interface OperationValidators {
  /** Nango-shaped issues for a body that fails the schema, or null when it passes. */
  validateBody(body: unknown): ValidationIssue[] | null;
  /** Whether a success answer fits the documented response schema for that status. */
  validateResponse(status: number, body: unknown): boolean;
}

const DOCUMENT_ID = 'openapi';

function pointerEscape(segment: string): string {
  return segment.replaceAll('~', '~0').replaceAll('/', '~1');
}

/** zod v4's name for a runtime value in "expected X, received Y" (JSON values only reach here). */
function receivedType(value: unknown): string {
  if (value === undefined) return 'undefined';
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  return typeof value;
}

function expectedType(schema: SchemaNode): string {
  if (schema['x-zod-type']) return schema['x-zod-type'];
  return Array.isArray(schema.type) ? (schema.type[0] ?? 'unknown') : (schema.type ?? 'unknown');
}

/** zod's issue for the keys a strict object does not know (also the shape of Nango's query errors). */
export function unrecognizedKeysIssue(keys: string[]): ValidationIssue {
  // zod quotes each key as it is, without escaping (util.stringifyPrimitive): `"a\"b"`, not JSON.
  const quoted = keys.map((key) => `"${key}"`).join(', ');
  return {
    code: 'unrecognized_keys',
    message: `Unrecognized key${keys.length > 1 ? 's' : ''}: ${quoted}`,
    path: [],
  };
}

/**
 * Turns ajv's errors into the issues Nango's zod schema reports for the same body (nango-api.md §3):
 * one issue per failing property in declaration order, unions collapsed to `invalid_union`, unknown keys
 * last in one `unrecognized_keys` issue. Only the top level is mapped: Nango's body schema is flat.
 */
function toNangoIssues(
  errors: ErrorObject[],
  body: unknown,
  schema: SchemaNode,
  resolve: (node: SchemaNode) => SchemaNode,
): ValidationIssue[] {
  const rootTypeError = errors.find((error) => error.instancePath === '' && error.keyword === 'type');
  if (rootTypeError || typeof body !== 'object' || body === null || Array.isArray(body)) {
    return [
      {
        code: 'invalid_type',
        message: `Invalid input: expected ${expectedType(schema)}, received ${receivedType(body)}`,
        path: [],
      },
    ];
  }
  const record = body as Record<string, unknown>;
  const issues: ValidationIssue[] = [];
  const missing = new Set(
    errors
      .filter((e) => e.keyword === 'required' && e.instancePath === '')
      .map((e) => e.params.missingProperty),
  );
  for (const [name, rawProperty] of Object.entries(schema.properties ?? {})) {
    const property = resolve(rawProperty);
    const own = errors.filter(
      (error) =>
        error.instancePath === `/${pointerEscape(name)}` || error.instancePath.startsWith(`/${name}/`),
    );
    if (!missing.has(name) && own.length === 0) continue;
    const path = [name];
    if (property.oneOf || property.anyOf) {
      issues.push({ code: 'invalid_union', message: 'Invalid input', path });
      continue;
    }
    const value = record[name];
    if (missing.has(name) || own.some((error) => error.keyword === 'type')) {
      issues.push({
        code: 'invalid_type',
        message: `Invalid input: expected ${expectedType(property)}, received ${receivedType(value)}`,
        path,
      });
      continue;
    }
    // zod runs a string's checks in the order they are declared (Nango: `.regex(…).max(255)`), and the
    // schema declares its keywords in that order; ajv reports maxLength before pattern.
    const declared = Object.keys(property);
    const inDeclaredOrder = own.toSorted((a, b) => declared.indexOf(a.keyword) - declared.indexOf(b.keyword));
    for (const error of inDeclaredOrder) {
      if (error.keyword === 'pattern') {
        issues.push({
          code: 'invalid_format',
          message: `Invalid string: must match pattern /${property.pattern}/`,
          path,
        });
      } else if (error.keyword === 'maxLength') {
        issues.push({
          code: 'too_big',
          message: `Too big: expected string to have <=${property.maxLength} characters`,
          path,
        });
      } else if (error.keyword === 'minLength') {
        issues.push({
          code: 'too_small',
          message: `Too small: expected string to have >=${property.minLength} characters`,
          path,
        });
      } else {
        issues.push({ code: 'custom', message: 'Invalid input', path });
      }
    }
  }
  const unknownKeys = errors
    .filter((error) => error.keyword === 'additionalProperties' && error.instancePath === '')
    .map((error) => String(error.params.additionalProperty));
  if (unknownKeys.length > 0) {
    issues.push(unrecognizedKeysIssue(unknownKeys));
  }
  return issues;
}

function createAjv(): Ajv2020 {
  // OpenAPI documents carry annotations JSON Schema does not know (example, x-…): not errors.
  return new Ajv2020({ allErrors: true, strict: false, allowUnionTypes: true });
}

export interface OpenApiDocument {
  paths: Record<string, Record<string, unknown>>;
  components?: unknown;
}

export function readOpenApiDocument(file: string | URL): OpenApiDocument {
  return JSON.parse(readFileSync(file, 'utf8')) as OpenApiDocument;
}

/**
 * Compiles the validators of every operation in the document, once, at start-up: never per request.
 * Returns them keyed `METHOD path` (e.g. `PATCH /connection/metadata`).
 */
export function compileOperations(document: OpenApiDocument): Map<string, OperationValidators> {
  const ajv = createAjv();
  ajv.addSchema(document as object, DOCUMENT_ID);
  const resolve = (node: SchemaNode): SchemaNode => {
    if (!node.$ref) return node;
    const pointer = node.$ref.replace(/^#\//, '').split('/');
    let target: unknown = document;
    for (const segment of pointer)
      target = (target as Record<string, unknown>)[segment.replaceAll('~1', '/')];
    return resolve(target as SchemaNode);
  };
  const operations = new Map<string, OperationValidators>();
  for (const [path, item] of Object.entries(document.paths)) {
    for (const method of Object.keys(item)) {
      const base = `${DOCUMENT_ID}#/paths/${pointerEscape(path)}/${method}`;
      const operation = item[method] as { responses?: Record<string, unknown> };
      const bodyRef = `${base}/requestBody/content/application~1json/schema`;
      const validateBody = ajv.getSchema(bodyRef) as ValidateFunction | undefined;
      if (!validateBody)
        throw new Error(`openapi: ${method.toUpperCase()} ${path} has no application/json body`);
      const bodySchema = resolve(
        (
          operation as {
            requestBody: { content: { 'application/json': { schema: SchemaNode } } };
          }
        ).requestBody.content['application/json'].schema,
      );
      const responseValidators = new Map<number, ValidateFunction>();
      for (const status of Object.keys(operation.responses ?? {})) {
        const validator = ajv.getSchema(`${base}/responses/${status}/content/application~1json/schema`);
        if (validator && /^2\d\d$/.test(status)) responseValidators.set(Number(status), validator);
      }
      operations.set(`${method.toUpperCase()} ${path}`, {
        validateBody(body) {
          if (validateBody(body)) return null;
          return toNangoIssues(validateBody.errors ?? [], body, bodySchema, resolve);
        },
        validateResponse(status, body) {
          const validator = responseValidators.get(status);
          return validator ? validator(body) : false;
        },
      });
    }
  }
  return operations;
}
