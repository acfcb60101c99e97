// The pipeline document (docs/pipeline.md) and the builder's graph: one source (plus named
// lookup sources for joins), a chain of transformations, one or more destinations.
// documentToGraph and graphToDocument are inverse: a document goes to a graph and back
// unchanged, and the YAML/JSON view edits the same document.
import YAML from 'yaml';

export type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
export type JsonObject = { [k: string]: Json };

export type NodeKind = 'source' | 'transform' | 'destination';

export interface NodeData {
  kind: NodeKind;
  /** connector_type for sources/destinations, transformation type for transforms. */
  type: string;
  /** source/destination: the connector config; transform: the transformation minus `type`. */
  config: JsonObject;
  /** A lookup source's name in `sources` (joins read it); empty for the main source. */
  lookupName?: string;
  [k: string]: unknown;
}

export interface GraphNode {
  id: string;
  type: 'step';
  position: { x: number; y: number };
  data: NodeData;
}

export interface GraphEdge {
  id: string;
  source: string;
  target: string;
}

export interface Graph {
  nodes: GraphNode[];
  edges: GraphEdge[];
  /** Everything of the document that is not a node: name, description, schedule, error_handling, … */
  settings: JsonObject;
}

/** Where a node's errors are reported by the API: `source`, `transformations[2]`, `destinations[1]`, `sources.crm`. */
export type NodePaths = Record<string, string>;

const STEP_X = 260;
const ROW_Y = 220;
const PER_ROW = 4;

/** The k-th step's place: rows of four, read left to right like text. */
function slot(k: number, dy = 0): { x: number; y: number } {
  return { x: (k % PER_ROW) * STEP_X, y: Math.floor(k / PER_ROW) * ROW_Y + dy };
}

export function edgeId(a: string, b: string): string {
  return `e-${a}-${b}`;
}

function isObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Lays a document out as a left-to-right chain. */
export function documentToGraph(doc: JsonObject): Graph {
  const nodes: GraphNode[] = [];
  const edges: GraphEdge[] = [];
  const settings: JsonObject = {};
  for (const [k, v] of Object.entries(doc)) {
    if (!['source', 'sources', 'transformations', 'destination', 'destinations'].includes(k)) settings[k] = v;
  }
  let k = 0;
  let prev: string | null = null;
  const link = (id: string) => {
    if (prev) edges.push({ id: edgeId(prev, id), source: prev, target: id });
    prev = id;
  };
  if (isObject(doc.source)) {
    const s = doc.source;
    nodes.push({ id: 'source', type: 'step', position: slot(0), data: { kind: 'source', type: String(s.connector_type ?? ''), config: isObject(s.config) ? s.config : {} } });
    prev = 'source';
  }
  const lookups: GraphNode[] = [];
  if (isObject(doc.sources)) {
    let i = 0;
    for (const [name, s] of Object.entries(doc.sources)) {
      if (!isObject(s)) continue;
      lookups.push({
        id: `lookup-${name}`,
        type: 'step',
        position: slot(0, 110 * ++i),
        data: { kind: 'source', type: String(s.connector_type ?? ''), config: isObject(s.config) ? s.config : {}, lookupName: name },
      });
    }
  }
  nodes.push(...lookups);
  const transforms = Array.isArray(doc.transformations) ? doc.transformations : [];
  transforms.forEach((t, i) => {
    const id = `t${i}`;
    k += 1;
    const { type, ...rest } = isObject(t) ? t : ({} as JsonObject);
    nodes.push({ id, type: 'step', position: slot(k), data: { kind: 'transform', type: String(type ?? ''), config: rest } });
    link(id);
    // A join is drawn with an edge from its lookup source.
    if (type === 'join' && typeof rest.join_source === 'string') {
      const l = lookups.find((n) => n.data.lookupName === rest.join_source);
      if (l) {
        l.position = slot(k, 110);
        edges.push({ id: edgeId(l.id, id), source: l.id, target: id });
      }
    }
  });
  const dests = isObject(doc.destination) ? [doc.destination] : Array.isArray(doc.destinations) ? doc.destinations : [];
  const last = prev;
  k += 1;
  dests.forEach((d, i) => {
    const id = isObject(doc.destination) ? 'destination' : `destination${i}`;
    const dd = isObject(d) ? d : {};
    nodes.push({ id, type: 'step', position: slot(k, i * 110), data: { kind: 'destination', type: String(dd.connector_type ?? ''), config: isObject(dd.config) ? dd.config : {} } });
    if (last) edges.push({ id: edgeId(last, id), source: last, target: id });
  });
  if (Array.isArray(doc.destinations)) settings['__destinations_list'] = true;
  return { nodes, edges, settings };
}

export interface GraphProblem {
  nodeId: string | null;
  message: string;
}

export interface GraphResult {
  document: JsonObject;
  /** API error path prefix → node id. */
  paths: NodePaths;
  problems: GraphProblem[];
}

function connector(n: GraphNode): JsonObject {
  return { connector_type: n.data.type, config: n.data.config };
}

/** Reads the document a graph stands for, and what is wrong with the graph's shape. */
export function graphToDocument(g: Graph): GraphResult {
  const problems: GraphProblem[] = [];
  const paths: NodePaths = {};
  const byId = new Map(g.nodes.map((n) => [n.id, n]));
  const out = new Map<string, string[]>();
  for (const e of g.edges) {
    if (!byId.has(e.source) || !byId.has(e.target)) continue;
    out.set(e.source, [...(out.get(e.source) ?? []), e.target]);
  }
  const { __destinations_list: asList, ...settings } = g.settings;
  const doc: JsonObject = {};
  if (typeof settings.name === 'string') doc.name = settings.name;
  for (const [k, v] of Object.entries(settings)) if (k !== 'name' && !['schedule', 'error_handling', 'depends_on', 'parallelism', 'checkpoint', 'schema_evolution'].includes(k)) doc[k] = v;

  const mains = g.nodes.filter((n) => n.data.kind === 'source' && !n.data.lookupName);
  const lookups = g.nodes.filter((n) => n.data.kind === 'source' && n.data.lookupName);
  if (mains.length === 0) problems.push({ nodeId: null, message: 'Add a source: drag one from the palette.' });
  for (const extra of mains.slice(1)) problems.push({ nodeId: extra.id, message: 'A pipeline has one main source; give this one a lookup name (for a join) or remove it.' });
  const main = mains[0];
  if (main) {
    doc.source = connector(main);
    paths['source'] = main.id;
  }
  if (lookups.length) {
    const sources: JsonObject = {};
    for (const l of lookups) {
      const name = l.data.lookupName as string;
      if (name in sources) problems.push({ nodeId: l.id, message: `Two lookup sources are named ${name}.` });
      sources[name] = connector(l);
      paths[`sources.${name}`] = l.id;
    }
    doc.sources = sources;
  }

  // Follow the chain from the main source through transformations to the destinations.
  const transforms: Json[] = [];
  const seen = new Set<string>();
  let cur: string | undefined = main?.id;
  let dests: GraphNode[] = [];
  while (cur && !seen.has(cur)) {
    seen.add(cur);
    const next: GraphNode[] = (out.get(cur) ?? []).map((id) => byId.get(id)!).filter((n) => n.data.kind !== 'source');
    const nextT: GraphNode[] = next.filter((n) => n.data.kind === 'transform');
    const nextD: GraphNode[] = next.filter((n) => n.data.kind === 'destination');
    if (nextT.length > 1) problems.push({ nodeId: cur, message: 'A step can lead to one transformation only (the chain is linear).' });
    if (nextT.length && nextD.length) problems.push({ nodeId: cur, message: 'Connect destinations after the last transformation.' });
    if (nextT.length) {
      const t: GraphNode = nextT[0];
      paths[`transformations[${transforms.length}]`] = t.id;
      transforms.push({ type: t.data.type, ...t.data.config });
      cur = t.id;
    } else {
      dests = nextD;
      cur = undefined;
    }
  }
  if (transforms.length || 'transformations' in settings) doc.transformations = transforms;
  for (const n of g.nodes) {
    if (n.data.kind === 'transform' && !seen.has(n.id)) problems.push({ nodeId: n.id, message: 'Not connected: link it into the chain from the source.' });
    if (n.data.kind === 'destination' && !dests.includes(n)) problems.push({ nodeId: n.id, message: 'Not connected: link the last step to it.' });
  }
  if (main && dests.length === 0 && !g.nodes.some((n) => n.data.kind === 'destination')) problems.push({ nodeId: null, message: 'Add a destination: drag one from the palette.' });
  if (dests.length === 1 && !asList) {
    doc.destination = connector(dests[0]);
    paths['destination'] = dests[0].id;
  } else if (dests.length >= 1) {
    doc.destinations = dests.map(connector);
    dests.forEach((d, i) => (paths[`destinations[${i}]`] = d.id));
  }
  for (const k of ['schedule', 'error_handling', 'depends_on', 'parallelism', 'checkpoint', 'schema_evolution']) if (k in settings) doc[k] = settings[k];
  return { document: doc, paths, problems };
}

/** The node an API error path (`transformations[2].operation`) belongs to, or null for the pipeline. */
export function nodeForPath(path: string, paths: NodePaths): string | null {
  let best: string | null = null;
  let bestLen = -1;
  for (const [prefix, id] of Object.entries(paths)) {
    if ((path === prefix || path.startsWith(prefix + '.') || path.startsWith(prefix + '[')) && prefix.length > bestLen) {
      best = id;
      bestLen = prefix.length;
    }
  }
  return best;
}

export function toText(doc: JsonObject, format: 'yaml' | 'json'): string {
  return format === 'json' ? JSON.stringify(doc, null, 2) + '\n' : YAML.stringify(doc, { lineWidth: 0 });
}

/** Parses the text view; throws an Error whose message says where the text is wrong. */
export function fromText(text: string, format: 'yaml' | 'json'): JsonObject {
  let v: unknown;
  if (format === 'json') {
    v = JSON.parse(text);
  } else {
    const d = YAML.parseDocument(text);
    if (d.errors.length) throw new Error(d.errors[0].message);
    v = d.toJS();
  }
  if (!isObject(v)) throw new Error('the pipeline document must be an object');
  return v;
}
