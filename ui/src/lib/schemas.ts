import { get } from '../api/client';
import type { JsonSchema } from './schemaForm';

export interface Schemas {
  connectors: Record<string, JsonSchema>;
  transformations: Record<string, JsonSchema>;
}

let cache: Promise<Schemas> | null = null;

/** The API's JSON Schemas (GET /schemas), fetched once per page load. */
export function loadSchemas(): Promise<Schemas> {
  cache ??= get<Schemas>('/schemas').catch((e) => {
    cache = null;
    throw e;
  });
  return cache;
}
