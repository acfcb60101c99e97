// The guide's examples (examples/guide/*), bundled as the builder's templates with their sample input.
import type { Json, JsonObject } from './document';

const pipelines = import.meta.glob('../../../examples/guide/*/pipeline.json', { eager: true, import: 'default' }) as Record<string, JsonObject>;
const inputs = import.meta.glob('../../../examples/guide/*/input.json', { eager: true, import: 'default' }) as Record<string, Json>;

export interface Template {
  id: string;
  name: string;
  document: JsonObject;
  sample: Json[];
}

export const TEMPLATES: Template[] = Object.entries(pipelines)
  .map(([path, document]) => {
    const dir = path.split('/').slice(-2, -1)[0];
    const input = inputs[path.replace('pipeline.json', 'input.json')];
    return { id: dir, name: String(document.name ?? dir), document, sample: Array.isArray(input) ? input : [] };
  })
  .sort((a, b) => a.id.localeCompare(b.id));
