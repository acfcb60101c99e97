// The visual pipeline builder (guide 4.4.1): a palette of sources, transformations and
// destinations dragged onto a React Flow canvas and connected; each node's form generated
// from the API's JSON Schema; the API's validation errors on the node they belong to, as you
// edit; preview on sample records; save writes the pipeline document the CLI runs; the
// YAML/JSON view edits the same document.
import { createContext, useCallback, useContext, useEffect, useMemo, useRef, useState, type DragEvent, type ReactNode } from 'react';
import { useNavigate, useParams } from 'react-router';
import {
  Background,
  Controls,
  Handle,
  MiniMap,
  Position,
  ReactFlow,
  ReactFlowProvider,
  addEdge,
  useEdgesState,
  useNodesState,
  useReactFlow,
  type Connection,
  type Node,
  type NodeProps,
} from '@xyflow/react';
import { AlertTriangle, ArrowRightLeft, CheckCircle2, Cloud, Database, Eye, FileText, Globe, Inbox, Layers, Play, Radio, Save, Trash2, Wand2 } from 'lucide-react';
import { get, post, put, type PipelineDetail, type Run } from '../api/client';
import { documentToGraph, edgeId, fromText, graphToDocument, nodeForPath, toText, type GraphEdge, type GraphNode, type Json, type JsonObject, type NodeData, type NodeKind } from '../lib/document';
import { connectorSchema, kindOf, kindsFor, loadSchemas, type Schemas } from '../lib/schemas';
import { TEMPLATES } from '../lib/templates';
import { SchemaForm } from '../components/SchemaForm';
import { ErrorText } from '../components/ui';

type StepNode = Node<NodeData & { errors?: string[] }, 'step'>;

// Icons by the name the API gives each connector kind (`GET /schemas` → `connector_kinds[].icon`);
// a kind whose icon this build does not know shows the default one, and still appears.
const ICON: Record<string, typeof FileText> = { file: FileText, globe: Globe, database: Database, cloud: Cloud, layers: Layers, radio: Radio, inbox: Inbox };
const iconFor = (s: Schemas | undefined, connectorType: string) => ICON[(s && kindOf(s, connectorType)?.icon) ?? ''] ?? FileText;
/** The API's schemas, for the nodes (their icons). */
const SchemasContext = createContext<Schemas | undefined>(undefined);
const KIND_COLOR: Record<NodeKind, string> = { source: 'border-l-sky-500', transform: 'border-l-violet-500', destination: 'border-l-emerald-500' };

function StepNodeView({ data }: NodeProps<StepNode>) {
  const schemas = useContext(SchemasContext);
  const Icon = data.kind === 'transform' ? Wand2 : iconFor(schemas, data.type);
  const errors = data.errors ?? [];
  const title = data.kind === 'transform' ? data.type : `${data.kind === 'source' ? (data.lookupName ? `lookup: ${data.lookupName}` : 'source') : 'destination'}`;
  const subtitle = data.kind === 'transform' ? (typeof data.config.field_name === 'string' ? data.config.field_name : (data.config.operation as string) ?? '') : `${data.type}${typeof data.config.path === 'string' ? ` · ${data.config.path}` : ''}`;
  return (
    <div
      data-testid="builder-node"
      data-kind={data.kind}
      data-type={data.type}
      data-errors={errors.length}
      className={`w-52 rounded-md border border-l-4 bg-white px-3 py-2 text-xs shadow-sm dark:bg-slate-900 ${KIND_COLOR[data.kind]} ${errors.length ? 'border-red-500 dark:border-red-500' : 'border-slate-300 dark:border-slate-700'}`}
    >
      {data.kind !== 'source' && <Handle type="target" position={Position.Left} />}
      <div className="flex items-center gap-1 font-semibold">
        <Icon className="h-3.5 w-3.5" aria-hidden /> {title}
        {errors.length > 0 && (
          <span className="ml-auto flex items-center gap-0.5 text-red-600" title={errors.join('\n')}>
            <AlertTriangle className="h-3.5 w-3.5" aria-hidden /> {errors.length}
          </span>
        )}
      </div>
      <div className="truncate text-slate-500">{subtitle || ' '}</div>
      {errors.length > 0 && (
        <ul className="node-errors mt-1 space-y-0.5 text-[10px] text-red-600" data-testid="node-errors">
          {errors.slice(0, 3).map((e, i) => (
            <li key={i}>{e}</li>
          ))}
        </ul>
      )}
      {data.kind !== 'destination' && <Handle type="source" position={Position.Right} />}
    </div>
  );
}

const nodeTypes = { step: StepNodeView };

let counter = 0;
const newId = (kind: NodeKind) => `${kind}-${Date.now().toString(36)}-${++counter}`;

interface PreviewOut {
  records: JsonObject[];
  errors: { index?: number | null; stage: string; reason: string; record: Json }[];
  filtered: number;
  dropped: number;
}

function PaletteItem({ kind, type, label, title, icon, onAdd }: { kind: NodeKind; type: string; label: string; title?: string; icon?: ReactNode; onAdd: (kind: NodeKind, type: string) => void }) {
  const onDragStart = (e: DragEvent) => {
    e.dataTransfer.setData('application/dagg-node', JSON.stringify({ kind, type }));
    e.dataTransfer.effectAllowed = 'move';
  };
  return (
    <button
      draggable
      onDragStart={onDragStart}
      onClick={() => onAdd(kind, type)}
      data-palette={`${kind}:${type}`}
      title={`${title ? `${title}\n` : ''}Drag onto the canvas, or press Enter to add after the selected step`}
      className="w-full cursor-grab rounded border border-slate-300 bg-white px-2 py-1 text-left text-xs hover:border-indigo-400 dark:border-slate-700 dark:bg-slate-800"
    >
      {icon}
      {label}
    </button>
  );
}

function BuilderInner() {
  const { id } = useParams();
  const navigate = useNavigate();
  const flow = useReactFlow();
  const [schemas, setSchemas] = useState<Schemas>();
  const [nodes, setNodes, onNodesChange] = useNodesState<StepNode>([]);
  const [edges, setEdges, onEdgesChange] = useEdgesState<GraphEdge>([]);
  const [settings, setSettings] = useState<JsonObject>({ name: '' });
  const [selected, setSelected] = useState<string | null>(null);
  const [formKey, setFormKey] = useState(0);
  const [apiErrors, setApiErrors] = useState<{ path: string; message: string }[]>([]);
  const [validating, setValidating] = useState(false);
  const [view, setView] = useState<'canvas' | 'yaml' | 'json'>('canvas');
  const [text, setText] = useState('');
  const [textError, setTextError] = useState<string>();
  const [sample, setSample] = useState('[]');
  const [preview, setPreview] = useState<PreviewOut | null>(null);
  const [previewError, setPreviewError] = useState<unknown>();
  const [error, setError] = useState<unknown>();
  const [saved, setSaved] = useState<PipelineDetail | null>(null);
  const [loadedId, setLoadedId] = useState<string | undefined>();

  useEffect(() => {
    loadSchemas().then(setSchemas, setError);
  }, []);

  const load = useCallback(
    (doc: JsonObject) => {
      const g = documentToGraph(doc);
      setNodes(g.nodes as StepNode[]);
      setEdges(g.edges);
      setSettings(g.settings);
      setSelected(null);
      setFormKey((k) => k + 1);
      setTimeout(() => flow.fitView({ padding: 0.2, maxZoom: 1 }), 50);
    },
    [setNodes, setEdges, flow],
  );

  useEffect(() => {
    if (id && id !== loadedId) {
      setLoadedId(id);
      get<PipelineDetail>(`/pipelines/${id}`).then((p) => {
        setSaved(p);
        load(p.document as JsonObject);
      }, setError);
    }
  }, [id, loadedId, load]);

  // The document depends on the steps, their configs and the links, not on positions, sizes or shown errors.
  const structure = JSON.stringify([
    nodes.map((n) => [n.id, n.data.kind, n.data.type, n.data.config, n.data.lookupName ?? '']),
    edges.map((e) => [e.source, e.target]),
    settings,
  ]);
  const graph = useMemo(() => {
    const [ns, es, st] = JSON.parse(structure) as [[string, NodeKind, string, JsonObject, string][], [string, string][], JsonObject];
    return graphToDocument({
      nodes: ns.map(([id, kind, type, config, lookupName]) => ({ id, type: 'step', position: { x: 0, y: 0 }, data: { kind, type, config, lookupName: lookupName || undefined } })) as GraphNode[],
      edges: es.map(([source, target]) => ({ id: edgeId(source, target), source, target })),
      settings: st,
    });
  }, [structure]);
  const docText = JSON.stringify(graph.document);
  const latestDoc = useRef(docText);
  latestDoc.current = docText;

  // Validate as you edit (debounced): the API's errors go to the node they belong to.
  useEffect(() => {
    const t = setTimeout(async () => {
      setValidating(true);
      try {
        const r = await post<{ valid: boolean; errors: { path: string; message: string }[] }>('/pipelines/validate', JSON.parse(docText));
        // An answer about a document that has changed since is dropped: its paths are stale.
        if (latestDoc.current === docText) setApiErrors(r.errors);
      } catch (e) {
        setError(e);
      } finally {
        setValidating(false);
      }
    }, 350);
    return () => clearTimeout(t);
  }, [docText]);

  const errorsByNode = useMemo(() => {
    const m = new Map<string | null, string[]>();
    const push = (k: string | null, msg: string) => m.set(k, [...(m.get(k) ?? []), msg]);
    for (const e of apiErrors) push(nodeForPath(e.path, graph.paths), `${e.path}: ${e.message}`);
    for (const p of graph.problems) push(p.nodeId, p.message);
    return m;
  }, [apiErrors, graph]);

  // Show each node's errors on the node itself.
  useEffect(() => {
    setNodes((ns) => {
      let changed = false;
      const next = ns.map((n) => {
        const errs = errorsByNode.get(n.id) ?? [];
        if (JSON.stringify(n.data.errors ?? []) === JSON.stringify(errs)) return n;
        changed = true;
        return { ...n, data: { ...n.data, errors: errs } };
      });
      return changed ? next : ns;
    });
  }, [errorsByNode, setNodes]);

  const addNode = useCallback(
    (kind: NodeKind, type: string, position?: { x: number; y: number }) => {
      const nid = newId(kind);
      setNodes((ns) => {
        const last = ns.find((n) => n.id === selected) ?? ns.filter((n) => n.data.kind !== 'destination' && !n.data.lookupName).at(-1);
        const pos = position ?? { x: (last?.position.x ?? -260) + 260, y: last?.position.y ?? 0 };
        const node: StepNode = { id: nid, type: 'step', position: pos, data: { kind, type, config: {} } };
        // Added from the keyboard (no drop position): link it after the selected or last step.
        if (!position && last && kind !== 'source' && last.data.kind !== 'destination') setEdges((es) => addEdge({ id: edgeId(last.id, nid), source: last.id, target: nid }, es));
        return [...ns, node];
      });
      setSelected(nid);
    },
    [setNodes, setEdges, selected],
  );

  const onDrop = (e: DragEvent) => {
    e.preventDefault();
    const raw = e.dataTransfer.getData('application/dagg-node');
    if (!raw) return;
    const { kind, type } = JSON.parse(raw) as { kind: NodeKind; type: string };
    addNode(kind, type, flow.screenToFlowPosition({ x: e.clientX, y: e.clientY }));
  };

  const onConnect = useCallback((c: Connection) => setEdges((es) => addEdge({ ...c, id: edgeId(c.source, c.target) }, es)), [setEdges]);

  const sel = nodes.find((n) => n.id === selected);
  const updateSelected = (patch: Partial<NodeData>) => setNodes((ns) => ns.map((n) => (n.id === selected ? { ...n, data: { ...n.data, ...patch } } : n)));

  const openText = (format: 'yaml' | 'json') => {
    setText(toText(graph.document, format));
    setTextError(undefined);
    setView(format);
  };
  const applyText = () => {
    try {
      load(fromText(text, view as 'yaml' | 'json'));
      setTextError(undefined);
      setView('canvas');
    } catch (e) {
      setTextError((e as Error).message);
    }
  };

  const applyTemplate = (tid: string) => {
    const t = TEMPLATES.find((x) => x.id === tid);
    if (!t) return;
    load(t.document);
    setSample(JSON.stringify(t.sample, null, 2));
    setPreview(null);
  };

  const runPreview = async () => {
    setPreviewError(undefined);
    try {
      const records = JSON.parse(sample);
      setPreview(await post<PreviewOut>('/transformations/preview', { transformations: graph.document.transformations ?? [], records }));
    } catch (e) {
      setPreview(null);
      setPreviewError(e);
    }
  };

  const save = async () => {
    setError(undefined);
    try {
      const p = saved ? await put<PipelineDetail>(`/pipelines/${saved.id}`, graph.document) : await post<PipelineDetail>('/pipelines', graph.document);
      setSaved(p);
      if (!id || id !== p.id) {
        setLoadedId(p.id);
        navigate(`/builder/${p.id}`, { replace: true });
      }
    } catch (e) {
      setError(e);
    }
  };

  const run = async () => {
    if (!saved) return;
    try {
      const r = await post<Run>(`/pipelines/${saved.id}/execute`);
      navigate(`/runs/${r.id}`);
    } catch (e) {
      setError(e);
    }
  };

  const pipelineErrors = errorsByNode.get(null) ?? [];
  const totalErrors = apiErrors.length + graph.problems.length;
  const dirty = saved ? JSON.stringify(saved.document) !== docText : true;
  const transformTypes = schemas ? Object.keys(schemas.transformations).filter((t) => t !== 'field_operation') : [];
  const selSchema = sel && schemas ? (sel.data.kind === 'transform' ? schemas.transformations[sel.data.type] : connectorSchema(schemas, sel.data.type)) : undefined;
  const palette = (role: 'source' | 'destination') =>
    (schemas ? kindsFor(schemas, role) : []).map((k) => {
      const Icon = iconFor(schemas, k.connector_type);
      return <PaletteItem key={k.connector_type} kind={role} type={k.connector_type} label={k.connector_type} title={k.summary} onAdd={addNode} icon={<Icon className="mr-1 inline h-3 w-3" aria-hidden />} />;
    });

  return (
    <div className="flex h-[calc(100vh-2.5rem)] flex-col gap-2">
      <div className="flex flex-wrap items-center gap-2">
        <h1 className="text-xl font-semibold">Builder</h1>
        <label className="flex items-center gap-1 text-sm">
          <span className="sr-only">Pipeline name</span>
          <input className="input !w-56" placeholder="pipeline name" aria-label="Pipeline name" value={String(settings.name ?? '')} onChange={(e) => setSettings((s) => ({ ...s, name: e.target.value }))} />
        </label>
        <select className="input !w-64" aria-label="Start from a template" value="" onChange={(e) => applyTemplate(e.target.value)}>
          <option value="">Start from a guide example…</option>
          {TEMPLATES.map((t) => (
            <option key={t.id} value={t.id}>
              {t.id}
            </option>
          ))}
        </select>
        <span className="text-sm" data-testid="validation-status" aria-live="polite">
          {validating ? (
            'checking…'
          ) : totalErrors === 0 ? (
            <span className="flex items-center gap-1 text-emerald-600">
              <CheckCircle2 className="h-4 w-4" aria-hidden /> valid
            </span>
          ) : (
            <span className="flex items-center gap-1 text-red-600">
              <AlertTriangle className="h-4 w-4" aria-hidden /> {totalErrors} problem(s)
            </span>
          )}
        </span>
        <div className="ml-auto flex gap-2" role="tablist" aria-label="View">
          <button role="tab" aria-selected={view === 'canvas'} className="btn" onClick={() => setView('canvas')}>
            Canvas
          </button>
          <button role="tab" aria-selected={view === 'yaml'} className="btn" onClick={() => openText('yaml')}>
            YAML
          </button>
          <button role="tab" aria-selected={view === 'json'} className="btn" onClick={() => openText('json')}>
            JSON
          </button>
          <button className="btn" onClick={runPreview}>
            <Eye className="h-4 w-4" aria-hidden /> Preview
          </button>
          <button className="btn-primary" onClick={save} disabled={!dirty && !!saved}>
            <Save className="h-4 w-4" aria-hidden /> {saved ? (dirty ? 'Save' : `Saved v${saved.version}`) : 'Save'}
          </button>
          <button className="btn" onClick={run} disabled={!saved || dirty}>
            <Play className="h-4 w-4" aria-hidden /> Run
          </button>
        </div>
      </div>
      <ErrorText error={error} />
      <div className="flex min-h-0 flex-1 gap-2">
        <aside aria-label="Palette" className="w-40 shrink-0 space-y-3 overflow-y-auto text-xs">
          <div>
            <h2 className="mb-1 font-semibold text-sky-600">Sources</h2>
            <div className="space-y-1">
              {palette('source')}
            </div>
          </div>
          <div>
            <h2 className="mb-1 font-semibold text-violet-600">Transformations</h2>
            <div className="space-y-1">
              {transformTypes.map((t) => (
                <PaletteItem key={t} kind="transform" type={t} label={t} onAdd={addNode} />
              ))}
            </div>
          </div>
          <div>
            <h2 className="mb-1 font-semibold text-emerald-600">Destinations</h2>
            <div className="space-y-1">
              {palette('destination')}
            </div>
          </div>
        </aside>
        <div className="relative min-w-0 flex-1 rounded border border-slate-200 dark:border-slate-800" onDragOver={(e) => (e.preventDefault(), (e.dataTransfer.dropEffect = 'move'))} onDrop={onDrop} data-testid="canvas">
          {view === 'canvas' ? (
            <SchemasContext.Provider value={schemas}>
              <ReactFlow
                nodes={nodes}
                edges={edges}
                nodeTypes={nodeTypes}
                onNodesChange={onNodesChange}
                onEdgesChange={onEdgesChange}
                onConnect={onConnect}
                onNodeClick={(_, n) => setSelected(n.id)}
                onSelectionChange={({ nodes: sel }) => sel.length === 1 && setSelected(sel[0].id)}
                onPaneClick={() => setSelected(null)}
                onNodesDelete={(ds) => ds.some((d) => d.id === selected) && setSelected(null)}
                deleteKeyCode={['Delete', 'Backspace']}
                defaultViewport={{ x: 0, y: 0, zoom: 1 }}
                fitViewOptions={{ maxZoom: 1, padding: 0.2 }}
                proOptions={{ hideAttribution: true }}
              >
                <Background />
                <Controls />
                <MiniMap pannable zoomable className="!hidden xl:!block" />
              </ReactFlow>
            </SchemasContext.Provider>
          ) : (
            <div className="flex h-full flex-col gap-2 p-2">
              <textarea className="input min-h-0 flex-1 font-mono text-xs" aria-label={`Pipeline document (${view.toUpperCase()})`} value={text} onChange={(e) => setText(e.target.value)} spellCheck={false} data-testid="document-text" />
              {textError && <ErrorText error={new Error(textError)} />}
              <div className="flex gap-2">
                <button className="btn-primary" onClick={applyText}>
                  <ArrowRightLeft className="h-4 w-4" aria-hidden /> Apply to canvas
                </button>
                <button className="btn" onClick={() => setView('canvas')}>
                  Discard
                </button>
              </div>
            </div>
          )}
        </div>
        <aside aria-label="Properties" className="w-80 shrink-0 space-y-3 overflow-y-auto">
          {pipelineErrors.length > 0 && (
        <ul className="card border-red-300 dark:border-red-800 space-y-1 rounded border border-red-300 p-2 text-xs text-red-700 dark:border-red-800 dark:text-red-300" data-testid="pipeline-errors">
              {pipelineErrors.map((e, i) => (
            <li key={i}>{e}</li>
          ))}
        </ul>
      )}
          {sel && selSchema ? (
            <div className="card space-y-3" data-testid="node-form">
              <div className="flex items-center justify-between">
                <h2 className="text-sm font-semibold">
                  {sel.data.kind}: {sel.data.type}
                </h2>
                <button className="btn" aria-label="Remove this step" onClick={() => (setNodes((ns) => ns.filter((n) => n.id !== sel.id)), setEdges((es) => es.filter((e) => e.source !== sel.id && e.target !== sel.id)), setSelected(null))}>
                  <Trash2 className="h-4 w-4" aria-hidden />
                </button>
              </div>
              <p className="text-xs text-slate-500">{selSchema.description}</p>
              {sel.data.kind === 'source' && (
                <div>
                  <label className="label" htmlFor="lookup-name">
                    Lookup name (for joins; empty for the main source)
                  </label>
                  <input id="lookup-name" className="input" value={sel.data.lookupName ?? ''} onChange={(e) => updateSelected({ lookupName: e.target.value || undefined })} />
                </div>
              )}
              <SchemaForm
                key={`${sel.id}-${formKey}`}
                idPrefix={`f-${sel.id}`}
                schema={selSchema}
                value={sel.data.config}
                role={sel.data.kind === 'transform' ? undefined : sel.data.kind === 'source' ? 'source' : 'destination'}
                onChange={(config) => updateSelected({ config })}
              />
              {(errorsByNode.get(sel.id) ?? []).length > 0 && (
                <ul className="space-y-1 text-xs text-red-600" role="alert">
                  {errorsByNode.get(sel.id)!.map((e, i) => (
                    <li key={i}>{e}</li>
                  ))}
                </ul>
              )}
            </div>
          ) : (
            <div className="card space-y-2 text-sm">
              <h2 className="font-semibold">Pipeline</h2>
              <label className="label" htmlFor="pl-desc">
                Description
              </label>
              <textarea id="pl-desc" className="input" rows={2} value={String(settings.description ?? '')} onChange={(e) => setSettings((s) => ({ ...s, description: e.target.value || (undefined as never) }))} />
              <p className="text-xs text-slate-500">Drag sources, transformations and destinations onto the canvas, connect them left to right, and select a step to edit it. Schedule and error handling are edited in the YAML/JSON view.</p>
            </div>
          )}
          <div className="card space-y-2">
            <h2 className="text-sm font-semibold">Sample records (JSON array)</h2>
            <textarea className="input font-mono text-xs" rows={6} aria-label="Sample records" value={sample} onChange={(e) => setSample(e.target.value)} spellCheck={false} />
            <button className="btn" onClick={runPreview}>
              <Eye className="h-4 w-4" aria-hidden /> Preview transformations
            </button>
            <ErrorText error={previewError} />
            {preview && (
              <div className="text-xs" data-testid="preview-result">
                <p className="mb-1">
                  <span data-testid="preview-count">{preview.records.length}</span> record(s) out · {preview.filtered} filtered · {preview.dropped} dropped · {preview.errors.length} rejected
                </p>
                <pre className="max-h-64 overflow-auto rounded bg-slate-100 p-2 dark:bg-slate-950">{JSON.stringify(preview.records, null, 2)}</pre>
                {preview.errors.map((e, i) => (
                  <p key={i} className="text-red-600">
                    {e.stage}: {e.reason}
                  </p>
                ))}
              </div>
            )}
          </div>
        </aside>
      </div>
    </div>
  );
}

export default function Builder() {
  return (
    <ReactFlowProvider>
      <BuilderInner />
    </ReactFlowProvider>
  );
}
