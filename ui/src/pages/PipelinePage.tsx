import { useState } from 'react';
import { Link, useNavigate, useParams } from 'react-router';
import { Copy, Pause, Pencil, Play, RotateCcw, Trash2 } from 'lucide-react';
import { del, get, post, qs, roleAtLeast, type Page, type PipelineDetail, type Run } from '../api/client';
import { useAsync } from '../components/useAsync';
import { Card, ErrorText, StatusBadge, fmtDate, fmtNum } from '../components/ui';
import { useAuth } from '../store/auth';
import { useLive } from '../store/live';
import { toText } from '../lib/document';

interface Version {
  version: number;
  created_at: string;
  created_by: string;
  comment: string;
}

interface Change {
  path: string;
  op: string;
  from?: unknown;
  to?: unknown;
}

export function PipelinePage() {
  const { id } = useParams();
  const me = useAuth((s) => s.me);
  const canEdit = roleAtLeast(me?.role, 'editor');
  const lastEvent = useLive((s) => s.lastEvent);
  const navigate = useNavigate();
  const [error, setError] = useState<unknown>();
  const p = useAsync(() => get<PipelineDetail>(`/pipelines/${id}`), [id, lastEvent]);
  const versions = useAsync(() => get<Page<Version>>(`/pipelines/${id}/versions${qs({ page_size: 100 })}`), [id, p.data?.version]);
  const runs = useAsync(() => get<Page<Run>>(`/pipelines/${id}/runs${qs({ page_size: 20, sort: '-created_at' })}`), [id, lastEvent]);
  const [diff, setDiff] = useState<{ from: number; to: number; changes: Change[] } | null>(null);
  const act = async (fn: () => Promise<unknown>) => {
    setError(undefined);
    try {
      await fn();
      p.reload();
    } catch (e) {
      setError(e);
    }
  };
  if (p.error) return <ErrorText error={p.error} />;
  const d = p.data;
  if (!d) return <p>Loading…</p>;
  return (
    <div className="space-y-4">
      <div className="flex flex-wrap items-center gap-2">
        <h1 className="text-xl font-semibold">{d.name}</h1>
        <span className="text-sm text-slate-500">version {d.version}</span>
        {d.paused && <span className="rounded bg-amber-100 px-2 text-xs text-amber-800">paused</span>}
        {canEdit && (
          <div className="ml-auto flex flex-wrap gap-2" data-testid="pipeline-actions">
            <button className="btn-primary" onClick={() => act(async () => navigate(`/runs/${(await post<Run>(`/pipelines/${id}/execute`)).id}`))}>
              <Play className="h-4 w-4" aria-hidden /> Run now
            </button>
            <Link className="btn" to={`/builder/${id}`}>
              <Pencil className="h-4 w-4" aria-hidden /> Edit
            </Link>
            <button className="btn" onClick={() => act(() => post(`/pipelines/${id}/${d.paused ? 'resume' : 'pause'}`))}>
              <Pause className="h-4 w-4" aria-hidden /> {d.paused ? 'Resume' : 'Pause'}
            </button>
            <button className="btn" onClick={() => act(async () => navigate(`/pipelines/${(await post<PipelineDetail>(`/pipelines/${id}/clone`, {})).id}`))}>
              <Copy className="h-4 w-4" aria-hidden /> Clone
            </button>
            <button
              className="btn"
              onClick={() => {
                if (confirm(`Delete ${d.name}?`)) act(async () => (await del(`/pipelines/${id}`), navigate('/pipelines')));
              }}
            >
              <Trash2 className="h-4 w-4" aria-hidden /> Delete
            </button>
          </div>
        )}
      </div>
      {d.description && <p className="text-sm text-slate-500">{d.description}</p>}
      <ErrorText error={error} />
      <div className="grid gap-4 xl:grid-cols-2">
        <Card title="Runs">
          <table className="w-full text-sm" aria-label="Runs of this pipeline">
            <thead className="text-left text-xs text-slate-500">
              <tr>
                <th>Run</th>
                <th>Status</th>
                <th>Created</th>
                <th className="text-right">Read</th>
                <th className="text-right">Written</th>
                <th className="text-right">Dead letters</th>
              </tr>
            </thead>
            <tbody>
              {runs.data?.items.map((r) => (
                <tr key={r.id} className="border-t border-slate-200 dark:border-slate-800">
                  <td>
                    <Link className="font-mono text-xs text-indigo-600 hover:underline dark:text-indigo-400" to={`/runs/${r.id}`}>
                      {r.id.slice(0, 8)}
                    </Link>
                  </td>
                  <td>
                    <StatusBadge status={r.status} />
                  </td>
                  <td>{fmtDate(r.created_at)}</td>
                  <td className="text-right">{fmtNum(r.counts.records_read)}</td>
                  <td className="text-right">{fmtNum(r.counts.records_written)}</td>
                  <td className="text-right">{fmtNum(r.counts.dead_lettered)}</td>
                </tr>
              ))}
            </tbody>
          </table>
          {runs.data?.items.length === 0 && <p className="text-sm text-slate-500">No runs yet.</p>}
        </Card>
        <Card title="Versions">
          <ul className="space-y-1 text-sm">
            {versions.data?.items.map((v) => (
              <li key={v.version} className="flex flex-wrap items-center gap-2">
                <span className="font-medium">v{v.version}</span>
                <span className="text-slate-500">{v.comment}</span>
                <span className="text-xs text-slate-500">{fmtDate(v.created_at)}</span>
                <span className="ml-auto flex gap-1">
                  {v.version > 1 && (
                    <button className="btn" onClick={() => act(async () => setDiff(await get(`/pipelines/${id}/diff${qs({ from: v.version - 1, to: v.version })}`)))}>
                      Diff
                    </button>
                  )}
                  {canEdit && v.version !== d.version && (
                    <button className="btn" onClick={() => act(() => post(`/pipelines/${id}/rollback`, { version: v.version }))}>
                      <RotateCcw className="h-3 w-3" aria-hidden /> Roll back
                    </button>
                  )}
                </span>
              </li>
            ))}
          </ul>
          {diff && (
            <div className="mt-3" aria-label="Version diff">
              <div className="mb-1 text-xs font-medium">
                v{diff.from} → v{diff.to} ({diff.changes.length} change(s)) <button className="btn ml-2" onClick={() => setDiff(null)}>Close</button>
              </div>
              <ul className="space-y-1 font-mono text-xs">
                {diff.changes.map((c, i) => (
                  <li key={i} className={c.op === 'added' ? 'text-emerald-600' : c.op === 'removed' ? 'text-red-600' : 'text-amber-600'}>
                    {c.op === 'added' ? '+' : c.op === 'removed' ? '−' : '~'} {c.path}: {c.from !== undefined && JSON.stringify(c.from)} {c.op === 'changed' && '→'} {c.to !== undefined && JSON.stringify(c.to)}
                  </li>
                ))}
              </ul>
            </div>
          )}
        </Card>
      </div>
      <Card title="Pipeline document (YAML)">
        <pre className="max-h-96 overflow-auto rounded bg-slate-100 p-2 text-xs dark:bg-slate-950">{toText(d.document as never, 'yaml')}</pre>
      </Card>
    </div>
  );
}
