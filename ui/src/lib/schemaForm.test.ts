import { describe, expect, it } from 'vitest';
import { fieldsOf, fromFormValues, isShown, toFormValues, zodFor, type JsonSchema } from './schemaForm';
import { connectorSchema, kindsFor, type Schemas } from './schemas';

// Shapes as GET /schemas publishes them (api/src/routes/schemas.rs).
const file: JsonSchema = {
  type: 'object',
  properties: {
    name: { type: 'string', description: 'A name for people.' },
    path: { type: 'string', description: 'The file.' },
    format: { type: 'string', enum: ['json', 'jsonl', 'csv'], description: '`json` (one array), `jsonl`, or `csv`.' },
    delimiter: { type: 'string', minLength: 1, maxLength: 1 },
    password: { type: 'string', format: 'password', writeOnly: true },
    port: { type: 'integer', minimum: 0, maximum: 65535 },
    headers: { type: 'object', additionalProperties: { type: 'string' } },
    key_fields: { type: 'array', items: { type: 'string' } },
    query: { type: 'string', 'x-dagg-role': 'source' },
    pagination: { type: 'object', properties: { type: { type: 'string', enum: ['none', 'offset'] }, page_size: { type: 'integer', minimum: 0 } }, required: ['type'] },
  },
  required: ['path', 'format'],
};

const fieldMapping: JsonSchema = {
  type: 'object',
  properties: {
    type: { const: 'field_mapping' },
    field_name: { type: 'string', format: 'field-path', description: 'The field changed in place.' },
    operation: { type: 'string', enum: ['title_case', 'rename', 'round'] },
    parameters: {
      type: 'object',
      properties: {
        to: { type: 'string', 'x-dagg-show-when': { operation: ['rename'] } },
        digits: { type: 'integer', 'x-dagg-show-when': { operation: ['round'] } },
      },
    },
  },
  required: ['type', 'field_name', 'operation'],
};

const addition: JsonSchema = {
  type: 'object',
  properties: { type: { const: 'field_addition' }, field_name: { type: 'string' }, value: { 'x-dagg-json': true, description: 'A literal.' }, include: { type: 'boolean' } },
  required: ['type', 'field_name'],
};

describe('forms generated from JSON Schema', () => {
  it('derives one input per property, with kinds, help text and required marks', () => {
    const f = fieldsOf(file);
    expect(f.map((x) => [x.name, x.kind, x.required])).toEqual([
      ['name', 'text', false],
      ['path', 'text', true],
      ['format', 'enum', true],
      ['delimiter', 'text', false],
      ['password', 'password', false],
      ['port', 'integer', false],
      ['headers', 'json', false],
      ['key_fields', 'list', false],
      ['query', 'text', false],
      ['pagination', 'object', false],
    ]);
    expect(f[2].options).toEqual(['json', 'jsonl', 'csv']);
    expect(f[1].description).toBe('The file.');
    expect(f[9].children!.map((c) => c.name)).toEqual(['type', 'page_size']);
    // A map with named secret keys and any other key (Kafka `properties`) is edited as JSON.
    const kafka: JsonSchema = { type: 'object', properties: { properties: { type: 'object', properties: { 'sasl.password': { type: 'string', format: 'password', writeOnly: true } }, additionalProperties: { type: 'string' } } } };
    expect(fieldsOf(kafka).map((x) => [x.name, x.kind])).toEqual([['properties', 'json']]);
    // A transformation's `type` is fixed by the node: not an input.
    expect(fieldsOf(fieldMapping).map((x) => x.name)).toEqual(['field_name', 'operation', 'parameters']);
  });

  it('round-trips a config through the form values', () => {
    const f = fieldsOf(file);
    const config = { path: 'in.csv', format: 'csv', delimiter: ';', port: 5432, headers: { 'X-A': '1' }, key_fields: ['id', 'day'], pagination: { type: 'offset', page_size: 10 } };
    const v = toFormValues(f, config);
    expect(v.port).toBe('5432');
    expect(v.key_fields).toBe('id, day');
    expect(v.headers).toBe('{"X-A":"1"}');
    expect(fromFormValues(f, v)).toEqual(config);
  });

  it('round-trips the guide’s e-commerce transformations', () => {
    const f = fieldsOf(fieldMapping);
    for (const t of [
      { field_name: 'product_name', operation: 'title_case' },
      { field_name: 'price', operation: 'rename', parameters: { to: 'unit_price' } },
      { field_name: 'x', operation: 'round', parameters: { digits: 2 } },
    ]) {
      expect(fromFormValues(f, toFormValues(f, t))).toEqual(t);
    }
    const a = fieldsOf(addition);
    for (const t of [{ field_name: 'processed_timestamp', value: 'current_timestamp' }, { field_name: 'rate', value: 0.15 }, { field_name: 'tags', value: ['a', 1] }, { field_name: 'on', value: true, include: true }]) {
      expect(fromFormValues(a, toFormValues(a, t))).toEqual(t);
    }
  });

  it('hides and drops parameters that do not apply to the chosen operation', () => {
    const f = fieldsOf(fieldMapping);
    const params = f.find((x) => x.name === 'parameters')!;
    const to = params.children!.find((x) => x.name === 'to')!;
    expect(isShown(to, { operation: 'rename' })).toBe(true);
    expect(isShown(to, { operation: 'round' })).toBe(false);
    // Switching from rename to title_case drops the stale `to`.
    const v = toFormValues(f, { field_name: 'p', operation: 'rename', parameters: { to: 'q' } });
    v.operation = 'title_case';
    expect(fromFormValues(f, v)).toEqual({ field_name: 'p', operation: 'title_case' });
    // Source-only settings are not offered for a destination.
    const query = fieldsOf(file).find((x) => x.name === 'query')!;
    expect(isShown(query, {}, 'destination')).toBe(false);
    expect(isShown(query, {}, 'source')).toBe(true);
  });

  it('keeps keys the form does not know (edited in the YAML/JSON view)', () => {
    const f = fieldsOf(fieldMapping);
    const keep = { field_name: 'a', operation: 'title_case', comment: 'mine' };
    expect(fromFormValues(f, toFormValues(f, keep), keep)).toEqual(keep);
  });

  it('checks the form with Zod: required, numbers, choices, JSON, one-character fields', () => {
    const z = zodFor(fieldsOf(file));
    const ok = toFormValues(fieldsOf(file), { path: 'a.json', format: 'json' });
    expect(z.safeParse(ok).success).toBe(true);
    const messages = (v: object) => {
      const r = z.safeParse({ ...ok, ...v });
      return r.success ? [] : r.error.issues.map((i) => i.message);
    };
    expect(messages({ path: ' ' })).toEqual(['Path is required']);
    expect(messages({ format: '' })).toEqual(['Format is required']);
    expect(messages({ port: '54x' })).toEqual(['Port must be a whole number']);
    expect(messages({ port: '70000' })).toEqual(['Port must be at most 65535']);
    expect(messages({ headers: '{"a": ' })).toEqual(['Headers must be a JSON object']);
    expect(messages({ delimiter: ';;' })).toEqual(['Delimiter has at most 1 character(s)']);
    // Parameters are checked only when their operation is chosen.
    const zm = zodFor(fieldsOf(fieldMapping));
    const base = { field_name: 'a', operation: 'title_case', parameters: { to: '', digits: 'x' } };
    expect(zm.safeParse(base).success).toBe(true);
    const r = zm.safeParse({ ...base, operation: 'round' });
    expect(r.success).toBe(false);
    expect(r.error!.issues.map((i) => i.message)).toEqual(['Digits must be a whole number']);
  });

  it('reads the derived shapes: $ref into $defs, enums as oneOf of documented constants', () => {
    // As schemars derives them from the model's config types (api/tests/golden/schemas).
    const rest: JsonSchema = {
      type: 'object',
      properties: {
        url: { type: 'string', description: 'The endpoint.' },
        format: { $ref: '#/$defs/FileFormat', description: '`json` or `csv`.' },
        pagination: { $ref: '#/$defs/Pagination', description: 'Source: how to walk pages.', 'x-dagg-role': 'source' },
      },
      required: ['url'],
      additionalProperties: false,
      $defs: {
        FileFormat: { description: 'File formats.', oneOf: [{ type: 'string', const: 'json', description: 'One JSON array.' }, { type: 'string', const: 'csv', description: 'A header row.' }] },
        Pagination: { type: 'object', properties: { type: { type: 'string', enum: ['none', 'offset'] }, page_size: { type: 'integer', format: 'uint32', minimum: 0 } }, required: ['type'] },
      },
    };
    const f = fieldsOf(rest);
    expect(f.map((x) => [x.name, x.kind, x.required])).toEqual([
      ['url', 'text', true],
      ['format', 'enum', false],
      ['pagination', 'object', false],
    ]);
    expect(f[1].options).toEqual(['json', 'csv']);
    expect(f[1].description).toBe('`json` or `csv`.');
    expect(f[2].role).toBe('source');
    expect(f[2].children!.map((c) => [c.name, c.kind, c.required])).toEqual([
      ['type', 'enum', true],
      ['page_size', 'integer', false],
    ]);
    const config = { url: 'https://x', format: 'csv', pagination: { type: 'offset', page_size: 10 } };
    expect(fromFormValues(f, toFormValues(f, config))).toEqual(config);
    expect(zodFor(f).safeParse(toFormValues(f, { ...config, format: 'xml' })).success).toBe(false);
  });

  it('builds the palette from the kinds the API lists, aliases included', () => {
    const s: Schemas = {
      connector_kinds: [
        { connector_type: 'rest_api', aliases: ['REST API'], summary: 'HTTP', roles: ['source', 'destination'], icon: 'globe', implemented: true },
        { connector_type: 'webhook', aliases: [], summary: 'New', roles: ['source'], icon: 'unknown-icon', implemented: true },
        { connector_type: 'snowflake', aliases: [], summary: 'Planned', roles: ['destination'], icon: 'database', implemented: false },
      ],
      connectors: { rest_api: file, webhook: file },
      transformations: {},
    };
    expect(kindsFor(s, 'source').map((k) => k.connector_type)).toEqual(['rest_api', 'webhook']);
    expect(kindsFor(s, 'destination').map((k) => k.connector_type)).toEqual(['rest_api']);
    expect(connectorSchema(s, 'REST API')).toBe(file);
    expect(connectorSchema(s, 'snowflake')).toBeUndefined();
  });
});
