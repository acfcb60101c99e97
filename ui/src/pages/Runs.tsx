import { useEffect, useMemo, useState } from 'react';
import { Link, useParams } from 'react-router';
import type { ColumnDef } from '@tanstack/react-table';
import { XCircle } from 'lucide-react';
import { ApiError, get, post, qs, roleAtLeast, type Page, type Run } from '../api/client';
import { useAsync } from '../components/useAsync';
import { DataTable } from '../components/DataTable';
import { Card, ErrorText, JsonView, StatusBadge, fmtDate, fmtNum } from '../components/ui';
import { useAuth } from '../store/auth';
import { useLive } from '../store/live';

export function Runs() {
  const [status, setStatus] = useState('');
  const lastEvent = useLive((s) => s.lastEvent);
  const list = useAsync(() => get<Page<Run>>(`/runs${qs({ page_size: 500, sort: '-created_at', status: status || undefined })}`), [status, lastEvent]);
  const columns = useMemo<ColumnDef<Run, unknown>[]>(
    () => [
      { accessorKey: 'id', header: 'Run', cell: (c) => <Link className="font-mono text-xs text-indigo-600 hover:underline dark:text-indigo-400" to={`/runs/${c.row.original.id}`}>{c.row.original.id.slice(0, 8)}</Link> },
      { accessorKey: 'pipeline_name', header: 'Pipeline', cell: (c) => <Link className="hover:underline" to={`/pipelines/${c.row.original.pipeline_id}`}>{String(c.getValue())}</Link> },
      { accessorKey: 'status', header: 'Status', cell: (c) => <StatusBadge status={String(c.getValue())} /> },
      { accessorKey: 'trigger', header: 'Trigger' },
      { accessorKey: 'created_at', header: 'Created', cell: (c) => fmtDate(String(c.getValue())) },
      { accessorKey: 'duration_seconds', header: 'Duration (s)', cell: (c) => fmtNum(c.getValue() as number, 2) },
      { accessorFn: (r) => r.counts.records_read ?? 0, id: 'read', header: 'Read' },
      { accessorFn: (r) => r.counts.records_written ?? 0, id: 'written', header: 'Written' },
      { accessorFn: (r) => r.counts.dead_lettered ?? 0, id: 'dead', header: 'Dead letters' },
    ],
    [],
  );
  return (
    <div className="space-y-3">
      <h1 className="text-xl font-semibold">Runs</h1>
      <ErrorText error={list.error} />
      <DataTable
        label="Runs"
        data={list.data?.items ?? []}
        columns={columns}
        csvName="runs.csv"
        csvColumns={['id', 'pipeline_name', 'status', 'trigger', 'created_at', 'duration_seconds', 'throughput', 'error'].map((k) => ({ key: k, header: k }))}
        filters={
          <select className="input w-36" value={status} onChange={(e) => setStatus(e.target.value)} aria-label="Filter by status">
            <option value="">Any status</option>
            {['pending', 'running', 'retrying', 'success', 'warning', 'failed', 'cancelled'].map((s) => (
              <option key={s}>{s}</option>
            ))}
          </select>
        }
      />
    </div>
  );
}

interface LogEvent {
  seq: number;
  at: string;
  level: string;
  kind: string;
  message: string;
}

interface DeadLetter {
  stage: string;
  reason: string;
  at?: string | null;
  record?: unknown;
  raw?: string | null;
}

interface Output {
  path: string;
  format: string;
  total: number;
  records: Record<string, unknown>[];
}

const TERMINAL = ['success', 'warning', 'failed', 'cancelled'];

/** Loads an optional endpoint: absent (404) means the server does not offer it. */
function useOptional<T>(path: string, deps: unknown[]) {
  const r = useAsync(async () => {
    try {
      return await get<T>(path);
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) return null;
      throw e;
    }
  }, deps);
  return r;
}

export function RunPage() {
  const { id } = useParams();
  const me = useAuth((s) => s.me);
  const live = useLive((s) => (id ? s.runs[id] : undefined));
  const run = useAsync(() => get<Run>(`/runs/${id}`), [id, live?.status]);
  const [error, setError] = useState<unknown>();
  const r = run.data;
  const status = (r && TERMINAL.includes(r.status) ? r.status : live?.status) ?? r?.status ?? 'pending';
  const done = TERMINAL.includes(status);
  const logs = useAsync(() => get<Page<LogEvent>>(`/runs/${id}/logs${qs({ page_size: 500 })}`), [id, status]);
  const dead = useOptional<Page<DeadLetter>>(`/runs/${id}/dead-letters${qs({ page_size: 100 })}`, [id, done]);
  const output = useOptional<Output>(`/runs/${id}/output${qs({ limit: 200 })}`, [id, done]);
  const lineage = useOptional<unknown>(`/runs/${id}/lineage`, [id, done]);
  const profile = useOptional<unknown>(`/runs/${id}/profile`, [id, done]);
  const reload = run.reload;
  // Poll while not finished, in case an event was missed.
  useEffect(() => {
    if (done) return;
    const t = setInterval(reload, 2000);
    return () => clearInterval(t);
  }, [done, reload]);
  if (run.error) return <ErrorText error={run.error} />;
  if (!r) return <p>Loading…</p>;
  const counts = { ...r.counts, ...(live?.counts ?? {}) };
  const cols = output.data?.records.length ? Array.from(new Set(output.data.records.flatMap((x) => Object.keys(x)))) : [];
  return (
    <div className="space-y-4">
      <div className="flex flex-wrap items-center gap-3">
        <h1 className="text-xl font-semibold">
          Run <span className="font-mono text-base">{r.id.slice(0, 8)}</span>
        </h1>
        <span aria-live="polite">
          <StatusBadge status={status} />
        </span>
        <Link className="text-sm text-indigo-600 hover:underline dark:text-indigo-400" to={`/pipelines/${r.pipeline_id}`}>
          {r.pipeline_name} v{r.pipeline_version}
        </Link>
        {!done && roleAtLeast(me?.role, 'editor') && (
          <button className="btn ml-auto" onClick={() => post(`/runs/${id}/cancel`).then(reload, setError)}>
            <XCircle className="h-4 w-4" aria-hidden /> Cancel
          </button>
        )}
      </div>
      <ErrorText error={error} />
      {r.error && <ErrorText error={new Error(r.error)} />}
      <div className="grid grid-cols-2 gap-3 md:grid-cols-4 xl:grid-cols-7 text-sm">
        {[
          ['Read', counts.records_read],
          ['Written', counts.records_written],
          ['Dead letters', counts.dead_lettered],
          ['Filtered', counts.filtered],
          ['Dropped', counts.dropped],
          ['Duration (s)', r.duration_seconds],
          ['Records/s', r.throughput],
        ].map(([k, v]) => (
          <div key={k as string} className="card">
            <div className="text-xs text-slate-500">{k}</div>
            <div className="text-lg font-semibold" data-testid={`count-${String(k).toLowerCase().replace(/\W+/g, '-')}`}>
              {fmtNum(v as number, 2)}
            </div>
          </div>
        ))}
      </div>
      <Card title={`Records written${output.data ? ` (${output.data.total} in ${output.data.path})` : ''}`}>
        {output.error ? (
          <ErrorText error={output.error} />
        ) : output.data === null ? (
          <p className="text-sm text-slate-500">This server cannot show a run's output.</p>
        ) : !done ? (
          <p className="text-sm text-slate-500">Shown when the run has finished.</p>
        ) : (
          <div className="max-h-96 overflow-auto">
            <table className="w-full text-xs" aria-label="Output records" data-testid="output-records">
              <thead className="text-left text-slate-500">
                <tr>
                  {cols.map((c) => (
                    <th key={c} className="px-2 py-1">{c}</th>
                  ))}
                </tr>
              </thead>
              <tbody>
                {output.data?.records.map((rec, i) => (
                  <tr key={i} className="border-t border-slate-200 dark:border-slate-800">
                    {cols.map((c) => (
                      <td key={c} className="px-2 py-1">{typeof rec[c] === 'object' ? JSON.stringify(rec[c]) : String(rec[c] ?? '')}</td>
                    ))}
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
      </Card>
      <div className="grid gap-4 xl:grid-cols-2">
        <Card title="Log">
          <ol className="space-y-1 font-mono text-xs" aria-label="Run log">
            {logs.data?.items.map((e) => (
              <li key={e.seq} className={e.level === 'error' ? 'text-red-600' : e.level === 'warning' ? 'text-amber-600' : ''}>
                {fmtDate(e.at)} [{e.kind}] {e.message}
              </li>
            ))}
          </ol>
        </Card>
        <Card title="Dead-letter records">
          {dead.error ? (
            <ErrorText error={dead.error} />
          ) : dead.data?.items.length ? (
            <ul className="space-y-2 text-xs">
              {dead.data.items.map((d, i) => (
                <li key={i}>
                  <div>
                    <b>{d.stage}</b>: {d.reason}
                  </div>
                  <JsonView value={d.record ?? d.raw} />
                </li>
              ))}
            </ul>
          ) : (
            <p className="text-sm text-slate-500">None.</p>
          )}
        </Card>
      </div>
      {lineage.data != null && (
        <Card title="Lineage">
          <JsonView value={lineage.data} className="max-h-72" />
        </Card>
      )}
      {profile.data != null && (
        <Card title="Data profile">
          <JsonView value={profile.data} className="max-h-72" />
        </Card>
      )}
    </div>
  );
}
