import { describe, expect, it } from 'vitest';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { documentToGraph, edgeId, fromText, graphToDocument, nodeForPath, toText, type Graph, type JsonObject } from './document';

const guide = join(__dirname, '../../../examples/guide');
const examples: [string, JsonObject][] = readdirSync(guide, { withFileTypes: true })
  .filter((d) => d.isDirectory())
  .map((d) => [d.name, JSON.parse(readFileSync(join(guide, d.name, 'pipeline.json'), 'utf8'))]);

describe('the pipeline document and the builder graph', () => {
  it('reads the guide examples', () => {
    expect(examples.length).toBeGreaterThanOrEqual(5);
  });

  it.each(examples)('%s: document → graph → document is the same document', (_name, doc) => {
    const g = documentToGraph(doc);
    const r = graphToDocument(g);
    expect(r.problems).toEqual([]);
    expect(r.document).toEqual(doc);
  });

  it.each(examples)('%s: YAML and JSON text round trip both ways', (_name, doc) => {
    for (const format of ['yaml', 'json'] as const) {
      const text = toText(doc, format);
      expect(fromText(text, format)).toEqual(doc);
      // text → graph → text is the same text
      const again = toText(graphToDocument(documentToGraph(fromText(text, format))).document, format);
      expect(fromText(again, format)).toEqual(doc);
    }
  });

  it('lays the e-commerce pipeline out as a chain of 8 nodes', () => {
    const doc = examples.find(([n]) => n.startsWith('01'))![1];
    const g = documentToGraph(doc);
    expect(g.nodes.map((n) => n.data.kind)).toEqual(['source', 'transform', 'transform', 'transform', 'transform', 'transform', 'transform', 'destination']);
    expect(g.edges).toHaveLength(7);
    expect(g.nodes[1].data).toMatchObject({ type: 'field_mapping', config: { field_name: 'product_name', operation: 'title_case' } });
  });

  it('keeps a join’s lookup source in `sources`', () => {
    const doc = examples.find(([n]) => n.startsWith('04'))![1];
    const g = documentToGraph(doc);
    const lookup = g.nodes.find((n) => n.data.lookupName === 'crm_system')!;
    expect(lookup).toBeDefined();
    expect(g.edges.some((e) => e.source === lookup.id)).toBe(true);
    expect(graphToDocument(g).paths['sources.crm_system']).toBe(lookup.id);
  });

  it('builds a document from nodes connected in any order, as the canvas makes them', () => {
    const g: Graph = {
      settings: { name: 'p' },
      nodes: [
        { id: 'd', type: 'step', position: { x: 0, y: 0 }, data: { kind: 'destination', type: 'file', config: { path: 'o.json', format: 'json' } } },
        { id: 'b', type: 'step', position: { x: 0, y: 0 }, data: { kind: 'transform', type: 'field_removal', config: { field_names: ['x'] } } },
        { id: 's', type: 'step', position: { x: 0, y: 0 }, data: { kind: 'source', type: 'file', config: { path: 'i.json', format: 'json' } } },
        { id: 'a', type: 'step', position: { x: 0, y: 0 }, data: { kind: 'transform', type: 'field_mapping', config: { field_name: 'n', operation: 'trim' } } },
      ],
      edges: [
        { id: edgeId('b', 'd'), source: 'b', target: 'd' },
        { id: edgeId('s', 'a'), source: 's', target: 'a' },
        { id: edgeId('a', 'b'), source: 'a', target: 'b' },
      ],
    };
    const r = graphToDocument(g);
    expect(r.problems).toEqual([]);
    expect(r.document).toEqual({
      name: 'p',
      source: { connector_type: 'file', config: { path: 'i.json', format: 'json' } },
      transformations: [{ type: 'field_mapping', field_name: 'n', operation: 'trim' }, { type: 'field_removal', field_names: ['x'] }],
      destination: { connector_type: 'file', config: { path: 'o.json', format: 'json' } },
    });
    // API errors find their node.
    expect(nodeForPath('transformations[1].field_names', r.paths)).toBe('b');
    expect(nodeForPath('transformations[0]', r.paths)).toBe('a');
    expect(nodeForPath('destination.config.format', r.paths)).toBe('d');
    expect(nodeForPath('source', r.paths)).toBe('s');
    expect(nodeForPath('name', r.paths)).toBeNull();
  });

  it('names what is wrong with the graph, on the node', () => {
    const g: Graph = {
      settings: { name: 'p' },
      nodes: [
        { id: 's', type: 'step', position: { x: 0, y: 0 }, data: { kind: 'source', type: 'file', config: {} } },
        { id: 'lonely', type: 'step', position: { x: 0, y: 0 }, data: { kind: 'transform', type: 'field_mapping', config: {} } },
        { id: 'd', type: 'step', position: { x: 0, y: 0 }, data: { kind: 'destination', type: 'file', config: {} } },
      ],
      edges: [],
    };
    const r = graphToDocument(g);
    expect(r.problems.map((p) => p.nodeId)).toEqual(['lonely', 'd']);
    expect(graphToDocument({ nodes: [], edges: [], settings: {} }).problems.map((p) => p.message)).toEqual(['Add a source: drag one from the palette.']);
  });

  it('says where bad text is wrong', () => {
    expect(() => fromText('{"a": ', 'json')).toThrow();
    expect(() => fromText('a: [1,', 'yaml')).toThrow();
    expect(() => fromText('[1, 2]', 'json')).toThrow('must be an object');
  });
});
