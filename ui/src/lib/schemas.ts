import { get } from '../api/client';
import type { JsonSchema } from './schemaForm';

/** A connector kind as the API lists it (`GET /schemas` → `connector_kinds`), in palette order. */
export interface ConnectorKind {
  connector_type: string;
  aliases: string[];
  summary: string;
  roles: ('source' | 'destination')[];
  /** An icon name; the UI shows its default icon for a name it does not know. */
  icon: string;
  implemented: boolean;
}

export interface Schemas {
  connector_kinds: ConnectorKind[];
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

/** The kinds that can play `role`, in the API's order (only those this build implements). */
export function kindsFor(s: Schemas, role: 'source' | 'destination'): ConnectorKind[] {
  return s.connector_kinds.filter((k) => k.implemented && k.roles.includes(role));
}

/** The kind a `connector_type` names (by its name or an alias such as `REST API`). */
export function kindOf(s: Schemas, connectorType: string): ConnectorKind | undefined {
  return s.connector_kinds.find((k) => k.connector_type === connectorType || k.aliases.includes(connectorType));
}

/** The config schema of a `connector_type`, aliases included. */
export function connectorSchema(s: Schemas, connectorType: string): JsonSchema | undefined {
  const k = kindOf(s, connectorType);
  return k ? s.connectors[k.connector_type] : undefined;
}
