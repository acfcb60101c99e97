import { get } from '../api/client';
import type { JsonSchema } from './schemaForm';

/** The connector types the API publishes schemas for (`GET /schemas`), in palette order. */
export const CONNECTOR_TYPES = ['file', 'rest_api', 'postgresql', 'mysql', 'aws_s3', 'kafka', 'nats', 'rabbitmq'];

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
