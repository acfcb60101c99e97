// Forms generated from the JSON Schemas the API publishes (GET /schemas): which inputs a
// schema asks for, the form's values for a config and back, and the Zod schema that checks
// the form before it becomes a config.
import { z } from 'zod';
import type { Json, JsonObject } from './document';

export interface JsonSchema {
  type?: string;
  enum?: Json[];
  const?: Json;
  format?: string;
  description?: string;
  title?: string;
  properties?: Record<string, JsonSchema>;
  required?: string[];
  items?: JsonSchema;
  additionalProperties?: boolean | JsonSchema;
  minimum?: number;
  maximum?: number;
  minLength?: number;
  maxLength?: number;
  minItems?: number;
  'x-dagg-json'?: boolean;
  'x-dagg-show-when'?: Record<string, string[]>;
  'x-dagg-role'?: 'source' | 'destination';
  $ref?: string;
  $defs?: Record<string, JsonSchema>;
  oneOf?: JsonSchema[];
  [k: string]: unknown;
}

export type FieldKind = 'text' | 'password' | 'textarea' | 'integer' | 'number' | 'boolean' | 'enum' | 'list' | 'json' | 'object';

export interface FieldSpec {
  name: string;
  label: string;
  kind: FieldKind;
  required: boolean;
  description?: string;
  options?: string[];
  showWhen?: Record<string, string[]>;
  role?: 'source' | 'destination';
  children?: FieldSpec[];
  schema: JsonSchema;
}

/** Form values: text inputs hold strings, checkboxes booleans, sub-objects nested values. */
export type FormValues = { [k: string]: string | boolean | FormValues };

function label(name: string): string {
  const s = name.replace(/_/g, ' ');
  return s.charAt(0).toUpperCase() + s.slice(1);
}

function kindOf(s: JsonSchema): FieldKind {
  if (s['x-dagg-json']) return 'json';
  if (s.enum) return 'enum';
  if (s.type === 'string') return s.format === 'password' ? 'password' : s.format === 'textarea' ? 'textarea' : 'text';
  if (s.type === 'integer') return 'integer';
  if (s.type === 'number') return 'number';
  if (s.type === 'boolean') return 'boolean';
  if (s.type === 'array') return s.items?.type === 'string' ? 'list' : 'json';
  // A map with some named keys (Kafka `properties`: the secret ones typed, any other key a
  // string) is edited as JSON, where any key can be added.
  if (s.type === 'object') return s.properties && typeof s.additionalProperties !== 'object' ? 'object' : 'json';
  return 'json';
}

/**
 * A property's schema as the form reads it: a `$ref` replaced by the definition it points to
 * in the root's `$defs` (the property's own keywords, such as its description, kept), and a
 * `oneOf` of constants (an enumeration whose choices are documented) read as an `enum`.
 */
export function resolve(root: JsonSchema, s: JsonSchema, depth = 0): JsonSchema {
  let out = s;
  if (typeof s.$ref === 'string' && depth < 32) {
    const name = s.$ref.replace(/^#\/\$defs\//, '');
    const def = root.$defs?.[name];
    if (def) {
      const own: JsonSchema = { ...s };
      delete own.$ref;
      out = { ...resolve(root, def, depth + 1), ...own };
    }
  }
  const alts = out.oneOf;
  if (!out.enum && Array.isArray(alts) && alts.length > 0 && alts.every((a) => a.const !== undefined)) {
    const rest: JsonSchema = { ...out };
    delete rest.oneOf;
    out = { ...(typeof alts[0].const === 'string' ? { type: 'string' } : {}), ...rest, enum: alts.map((a) => a.const as Json) };
  }
  return out;
}

/** The inputs a schema asks for, in the schema's order; `const` properties (a transformation's `type`) are not inputs. */
export function fieldsOf(schema: JsonSchema, root: JsonSchema = schema): FieldSpec[] {
  const req = new Set(schema.required ?? []);
  return Object.entries(schema.properties ?? {})
    .map(([name, s]) => [name, resolve(root, s)] as const)
    .filter(([, s]) => s.const === undefined)
    .map(([name, s]) => {
      const kind = kindOf(s);
      return {
        name,
        label: label(name),
        kind,
        required: req.has(name),
        description: s.description,
        options: s.enum?.map(String),
        showWhen: s['x-dagg-show-when'],
        role: s['x-dagg-role'],
        children: kind === 'object' ? fieldsOf(s, root) : undefined,
        schema: s,
      };
    });
}

/** Whether a field applies given its siblings' values (`x-dagg-show-when`). */
export function isShown(f: FieldSpec, siblings: FormValues, role?: 'source' | 'destination'): boolean {
  if (role && f.role && f.role !== role) return false;
  if (!f.showWhen) return true;
  return Object.entries(f.showWhen).every(([k, vals]) => vals.includes(String(siblings[k] ?? '')));
}

function jsonText(v: Json | undefined): string {
  if (v === undefined) return '';
  return typeof v === 'string' ? v : JSON.stringify(v);
}

/** The form's values for a config. */
export function toFormValues(fields: FieldSpec[], config: JsonObject): FormValues {
  const out: FormValues = {};
  for (const f of fields) {
    const v = config[f.name];
    switch (f.kind) {
      case 'boolean':
        out[f.name] = v === true;
        break;
      case 'object':
        out[f.name] = toFormValues(f.children!, typeof v === 'object' && v !== null && !Array.isArray(v) ? v : {});
        break;
      case 'list':
        out[f.name] = Array.isArray(v) ? v.map(String).join(', ') : '';
        break;
      case 'json':
        out[f.name] = jsonText(v);
        break;
      default:
        out[f.name] = v === undefined || v === null ? '' : String(v);
    }
  }
  return out;
}

/** JSON text as a value; text that is not JSON is a string. */
export function parseLoose(text: string): Json {
  try {
    return JSON.parse(text) as Json;
  } catch {
    return text;
  }
}

/** The config a form's values stand for: empty optional inputs are left out, hidden ones too. */
export function fromFormValues(fields: FieldSpec[], values: FormValues, keep: JsonObject = {}, role?: 'source' | 'destination', outer: FormValues = {}): JsonObject {
  const out: JsonObject = {};
  // Keys the form does not show (set in the YAML/JSON view) are kept as they were.
  const known = new Set(fields.map((f) => f.name));
  for (const [k, v] of Object.entries(keep)) if (!known.has(k)) out[k] = v;
  for (const f of fields) {
    const here = { ...outer, ...values };
    if (!isShown(f, here, role)) continue;
    const v = values[f.name];
    switch (f.kind) {
      case 'boolean':
        if (v === true || f.required || keep[f.name] !== undefined) out[f.name] = v === true;
        break;
      case 'object': {
        const inner = fromFormValues(f.children!, (v as FormValues) ?? {}, (keep[f.name] as JsonObject) ?? {}, role, here);
        if (Object.keys(inner).length || f.required) out[f.name] = inner;
        break;
      }
      default: {
        const text = typeof v === 'string' ? v : '';
        if (text.trim() === '') break;
        if (f.kind === 'integer' || f.kind === 'number') out[f.name] = Number(text);
        else if (f.kind === 'list') out[f.name] = text.split(',').map((s) => s.trim()).filter(Boolean);
        else if (f.kind === 'json') out[f.name] = f.schema.type === 'string' ? text : parseLoose(text);
        else out[f.name] = text;
      }
    }
  }
  return out;
}

function isEmpty(v: unknown): boolean {
  if (v === undefined || v === null || v === false) return true;
  if (typeof v === 'string') return v.trim() === '';
  if (typeof v === 'object') return Object.values(v as object).every(isEmpty);
  return false;
}

/** The Zod schema of a form: required inputs filled, numbers numbers, JSON inputs JSON where the schema needs a structure. */
export function zodFor(fields: FieldSpec[], top = true): z.ZodType<FormValues> {
  const shape: Record<string, z.ZodType> = {};
  for (const f of fields) {
    let t: z.ZodType;
    const need = (s: z.ZodString) => (f.required ? s.trim().min(1, `${f.label} is required`) : s);
    switch (f.kind) {
      case 'boolean':
        t = z.boolean();
        break;
      case 'object': {
        // An optional group left empty is fine; once anything is filled it must be whole.
        const inner = zodFor(f.children!, false);
        t = f.required
          ? inner
          : z.any().superRefine((v, ctx) => {
              if (isEmpty(v)) return;
              const r = inner.safeParse(v);
              if (!r.success) for (const i of r.error.issues) ctx.addIssue({ code: 'custom', message: i.message, path: i.path });
            });
        break;
      }
      case 'integer':
        t = need(z.string()).superRefine((s, ctx) => {
          const v = s.trim();
          if (v === '') return;
          const n = Number(v);
          if (!/^-?\d+$/.test(v)) ctx.addIssue({ code: 'custom', message: `${f.label} must be a whole number` });
          else if (f.schema.minimum !== undefined && n < f.schema.minimum) ctx.addIssue({ code: 'custom', message: `${f.label} must be at least ${f.schema.minimum}` });
          else if (f.schema.maximum !== undefined && n > f.schema.maximum) ctx.addIssue({ code: 'custom', message: `${f.label} must be at most ${f.schema.maximum}` });
        });
        break;
      case 'number':
        t = need(z.string()).refine((s) => s.trim() === '' || !Number.isNaN(Number(s)), `${f.label} must be a number`);
        break;
      case 'enum':
        t = need(z.string()).refine((s) => s === '' || f.options!.includes(s), `${f.label} must be one of ${f.options!.join(', ')}`);
        break;
      case 'json': {
        const structured = f.schema.type === 'object' || f.schema.type === 'array';
        t = need(z.string()).refine((s) => {
          if (!structured || s.trim() === '') return true;
          try {
            const v = JSON.parse(s);
            return f.schema.type === 'array' ? Array.isArray(v) : typeof v === 'object' && v !== null && !Array.isArray(v);
          } catch {
            return false;
          }
        }, `${f.label} must be a JSON ${f.schema.type}`);
        break;
      }
      default: {
        let s = need(z.string());
        if (f.schema.maxLength !== undefined) s = s.max(f.schema.maxLength, `${f.label} has at most ${f.schema.maxLength} character(s)`);
        t = s;
      }
    }
    shape[f.name] = f.showWhen ? z.any() : t;
  }
  const obj = z.object(shape);
  if (!top) return obj as unknown as z.ZodType<FormValues>;
  // Fields shown only for some choices (of a sibling or of an enclosing form) are checked only when shown.
  return obj.superRefine((vals, ctx) => checkShown(fields, vals as FormValues, {}, [], ctx)) as unknown as z.ZodType<FormValues>;
}

function checkShown(fields: FieldSpec[], vals: FormValues, outer: FormValues, path: string[], ctx: z.RefinementCtx) {
  const here = { ...outer, ...vals };
  for (const f of fields) {
    if (f.children) checkShown(f.children, (vals[f.name] as FormValues) ?? {}, here, [...path, f.name], ctx);
    if (!f.showWhen || !isShown(f, here)) continue;
    const r = zodFor([{ ...f, showWhen: undefined }], false).safeParse({ [f.name]: vals[f.name] });
    if (!r.success) for (const i of r.error.issues) ctx.addIssue({ code: 'custom', message: i.message, path: [...path, ...i.path.map(String)] });
  }
}
