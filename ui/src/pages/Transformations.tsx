// Saved transformation rules: a rule builder (one generated form per rule) with a live
// preview on sample records.
import { useEffect, useState } from 'react';
import { ArrowDown, ArrowUp, Plus, Save, Trash2 } from 'lucide-react';
import { del, get, post, put, qs, roleAtLeast, type Page } from '../api/client';
import { useAsync } from '../components/useAsync';
import { SchemaForm } from '../components/SchemaForm';
import { Card, ErrorText, fmtDate } from '../components/ui';
import { useAuth } from '../store/auth';
import { loadSchemas, type Schemas } from '../lib/schemas';
import type { Json, JsonObject } from '../lib/document';

interface Saved {
  id: string;
  name: string;
  description?: string | null;
  transformations: JsonObject[];
  updated_at: string;
}

interface Rule {
  key: number;
  type: string;
  config: JsonObject;
}

let seq = 0;

export function Transformations() {
  const me = useAuth((s) => s.me);
  const canEdit = roleAtLeast(me?.role, 'editor');
  const list = useAsync(() => get<Page<Saved>>(`/transformations${qs({ page_size: 500, sort: 'name' })}`), []);
  const [schemas, setSchemas] = useState<Schemas>();
  const [current, setCurrent] = useState<{ id?: string; name: string; description: string }>({ name: '', description: '' });
  const [rules, setRules] = useState<Rule[]>([]);
  const [newType, setNewType] = useState('field_mapping');
  const [sample, setSample] = useState('[{"name": "ada lovelace", "amount": 12.5, "status": "completed"}]');
  const [preview, setPreview] = useState<{ records: Json[]; errors: { stage: string; reason: string }[]; filtered: number; dropped: number } | null>(null);
  const [previewError, setPreviewError] = useState<unknown>();
  const [error, setError] = useState<unknown>();
  useEffect(() => {
    loadSchemas().then(setSchemas, setError);
  }, []);
  const doc = rules.map((r) => ({ type: r.type, ...r.config }));
  const docText = JSON.stringify(doc);
  // Live preview: the rules run on the sample as you edit them.
  useEffect(() => {
    const t = setTimeout(async () => {
      try {
        const records = JSON.parse(sample);
        setPreview(await post('/transformations/preview', { transformations: JSON.parse(docText), records }));
        setPreviewError(undefined);
      } catch (e) {
        setPreview(null);
        setPreviewError(e);
      }
    }, 400);
    return () => clearTimeout(t);
  }, [docText, sample]);
  const open = (s: Saved) => {
    setCurrent({ id: s.id, name: s.name, description: s.description ?? '' });
    setRules(s.transformations.map((t) => {
      const { type, ...config } = t;
      return { key: ++seq, type: String(type), config };
    }));
  };
  const move = (i: number, d: number) => setRules((rs) => {
    const n = [...rs];
    const [r] = n.splice(i, 1);
    n.splice(i + d, 0, r);
    return n;
  });
  const save = async () => {
    setError(undefined);
    try {
      const body = { name: current.name, description: current.description || undefined, transformations: doc };
      const s = current.id ? await put<Saved>(`/transformations/${current.id}`, body) : await post<Saved>('/transformations', body);
      setCurrent({ id: s.id, name: s.name, description: s.description ?? '' });
      list.reload();
    } catch (e) {
      setError(e);
    }
  };
  return (
    <div className="space-y-3">
      <h1 className="text-xl font-semibold">Transformations</h1>
      <ErrorText error={list.error} />
      <div className="grid gap-4 xl:grid-cols-[16rem_1fr_1fr]">
        <Card title="Saved rule sets">
          <ul className="space-y-1 text-sm">
            {list.data?.items.map((s) => (
              <li key={s.id}>
                <button className="text-indigo-600 hover:underline dark:text-indigo-400" onClick={() => open(s)}>{s.name}</button>
                <span className="ml-1 text-xs text-slate-500">{fmtDate(s.updated_at)}</span>
              </li>
            ))}
          </ul>
          {canEdit && (
            <button className="btn mt-2" onClick={() => (setCurrent({ name: '', description: '' }), setRules([]))}>
              <Plus className="h-4 w-4" aria-hidden /> New rule set
            </button>
          )}
        </Card>
        <Card title="Rules">
          <div className="space-y-3">
            <input className="input" aria-label="Rule set name" placeholder="name" disabled={!canEdit} value={current.name} onChange={(e) => setCurrent({ ...current, name: e.target.value })} />
            {rules.map((r, i) => (
              <div key={r.key} className="rounded border border-slate-200 p-2 dark:border-slate-700">
                <div className="mb-2 flex items-center gap-1 text-sm font-medium">
                  {i + 1}. {r.type}
                  {canEdit && (
                    <span className="ml-auto flex gap-1">
                      <button className="btn" aria-label="Move up" disabled={i === 0} onClick={() => move(i, -1)}><ArrowUp className="h-3 w-3" /></button>
                      <button className="btn" aria-label="Move down" disabled={i === rules.length - 1} onClick={() => move(i, 1)}><ArrowDown className="h-3 w-3" /></button>
                      <button className="btn" aria-label="Remove rule" onClick={() => setRules((rs) => rs.filter((x) => x.key !== r.key))}><Trash2 className="h-3 w-3" /></button>
                    </span>
                  )}
                </div>
                {schemas?.transformations[r.type] && (
                  <SchemaForm idPrefix={`rule-${r.key}`} schema={schemas.transformations[r.type]} value={r.config} readOnly={!canEdit} onChange={(config) => setRules((rs) => rs.map((x) => (x.key === r.key ? { ...x, config } : x)))} />
                )}
              </div>
            ))}
            {canEdit && (
              <div className="flex gap-2">
                <select className="input" aria-label="Rule type" value={newType} onChange={(e) => setNewType(e.target.value)}>
                  {Object.keys(schemas?.transformations ?? {}).map((t) => <option key={t}>{t}</option>)}
                </select>
                <button className="btn" onClick={() => setRules((rs) => [...rs, { key: ++seq, type: newType, config: {} }])}>
                  <Plus className="h-4 w-4" aria-hidden /> Add rule
                </button>
              </div>
            )}
            <ErrorText error={error} />
            {canEdit && (
              <div className="flex gap-2">
                <button className="btn-primary" onClick={save}><Save className="h-4 w-4" aria-hidden /> Save</button>
                {current.id && (
                  <button className="btn" onClick={async () => (await del(`/transformations/${current.id}`).catch(setError), setCurrent({ name: '', description: '' }), setRules([]), list.reload())}>
                    <Trash2 className="h-4 w-4" aria-hidden /> Delete
                  </button>
                )}
              </div>
            )}
          </div>
        </Card>
        <Card title="Live preview">
          <label className="label" htmlFor="t-sample">Sample records (JSON array)</label>
          <textarea id="t-sample" className="input font-mono text-xs" rows={6} value={sample} onChange={(e) => setSample(e.target.value)} />
          <ErrorText error={previewError} />
          {preview && (
            <div className="mt-2 text-xs" data-testid="rules-preview">
              <p>{preview.records.length} out · {preview.filtered} filtered · {preview.dropped} dropped · {preview.errors.length} rejected</p>
              <pre className="max-h-80 overflow-auto rounded bg-slate-100 p-2 dark:bg-slate-950">{JSON.stringify(preview.records, null, 2)}</pre>
              {preview.errors.map((e, i) => <p key={i} className="text-red-600">{e.stage}: {e.reason}</p>)}
            </div>
          )}
        </Card>
      </div>
    </div>
  );
}
