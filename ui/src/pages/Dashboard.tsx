import { Link } from 'react-router';
import { Area, AreaChart, Bar, BarChart, CartesianGrid, Legend, ResponsiveContainer, Tooltip, XAxis, YAxis } from 'recharts';
import { get, qs, type Page, type Run } from '../api/client';
import { useAsync } from '../components/useAsync';
import { Card, ErrorText, Stat, StatusBadge, fmtDate, fmtNum } from '../components/ui';
import { useLive } from '../store/live';
import { useEffect } from 'react';

interface Stats {
  pipelines_total: number;
  pipelines_paused: number;
  connectors_total: number;
  transformations_total: number;
  users_total: number;
  runs_total: number;
  runs_active: number;
  runs_by_status: Record<string, number>;
  success_rate?: number | null;
  records_read_total: number;
  records_written_total: number;
  dead_lettered_total: number;
}

interface Health {
  status: string;
  version: string;
  uptime_seconds: number;
  storage: { ok: boolean; message: string };
  cluster: string;
  active_runs: number;
  websocket_clients: number;
  memory_rss_bytes?: number | null;
  cpu_count: number;
}

interface ClusterMember {
  id: number;
  api_addr: string;
  voter: boolean;
  up: boolean;
  runs: number;
  instances?: number | null;
}

interface ClusterStatus {
  node_id: number;
  leader_id?: number | null;
  term: number;
  members: ClusterMember[];
}

interface Alert {
  id: string;
  severity: string;
  kind: string;
  message: string;
  at: string;
  run_id?: string | null;
}

export function Dashboard() {
  const lastEvent = useLive((s) => s.lastEvent);
  const series = useLive((s) => s.series);
  const stats = useAsync(() => get<Stats>('/monitoring/pipeline-stats'), [lastEvent]);
  const health = useAsync(() => get<Health>('/monitoring/system-health'), [lastEvent]);
  const runs = useAsync(() => get<Page<Run>>(`/runs${qs({ sort: '-created_at', page_size: 8 })}`), [lastEvent]);
  const alerts = useAsync(() => get<Page<Alert>>(`/monitoring/alerts${qs({ page_size: 5 })}`), [lastEvent]);
  const cluster = useAsync(() => get<ClusterStatus>('/cluster'), [lastEvent]);
  const reloadHealth = health.reload;
  const reloadCluster = cluster.reload;
  useEffect(() => {
    const t = setInterval(() => (reloadHealth(), reloadCluster()), 10000);
    return () => clearInterval(t);
  }, [reloadHealth, reloadCluster]);
  const c = cluster.data;
  const s = stats.data;
  const h = health.data;
  return (
    <div className="space-y-4">
      <h1 className="text-xl font-semibold">Dashboard</h1>
      <ErrorText error={stats.error} />
      <div className="grid grid-cols-2 gap-3 lg:grid-cols-4 xl:grid-cols-6">
        <Stat label="Pipelines" value={fmtNum(s?.pipelines_total)} hint={s ? `${s.pipelines_paused} paused` : undefined} />
        <Stat label="Runs" value={fmtNum(s?.runs_total)} hint={s ? `${s.runs_active} active` : undefined} />
        <Stat label="Success rate" value={s?.success_rate == null ? '—' : `${(s.success_rate * 100).toFixed(1)}%`} />
        <Stat label="Records read" value={fmtNum(s?.records_read_total)} />
        <Stat label="Records written" value={fmtNum(s?.records_written_total)} />
        <Stat label="Dead letters" value={fmtNum(s?.dead_lettered_total)} />
      </div>
      <div className="grid gap-4 xl:grid-cols-3">
        <Card title="Live throughput (records/s)" className="xl:col-span-2">
          <div className="h-56" data-testid="throughput-chart">
            <ResponsiveContainer>
              <AreaChart data={series}>
                <CartesianGrid strokeDasharray="3 3" opacity={0.3} />
                <XAxis dataKey="label" fontSize={10} minTickGap={40} />
                <YAxis fontSize={10} allowDecimals={false} />
                <Tooltip />
                <Legend />
                <Area type="monotone" dataKey="read" name="read" stroke="#6366f1" fill="#6366f1" fillOpacity={0.2} isAnimationActive={false} />
                <Area type="monotone" dataKey="written" name="written" stroke="#10b981" fill="#10b981" fillOpacity={0.2} isAnimationActive={false} />
              </AreaChart>
            </ResponsiveContainer>
          </div>
        </Card>
        <Card title="System status">
          {h ? (
            <dl className="grid grid-cols-2 gap-y-1 text-sm" data-testid="system-status">
              <dt className="text-slate-500">Status</dt>
              <dd className={h.status === 'ok' ? 'text-emerald-600' : 'text-red-600'}>{h.status}</dd>
              <dt className="text-slate-500">Storage</dt>
              <dd>{h.storage.ok ? 'ok' : h.storage.message}</dd>
              <dt className="text-slate-500">Version</dt>
              <dd>{h.version}</dd>
              <dt className="text-slate-500">Uptime</dt>
              <dd>{fmtNum(h.uptime_seconds / 60, 1)} min</dd>
              <dt className="text-slate-500">Active runs</dt>
              <dd>{h.active_runs}</dd>
              <dt className="text-slate-500">Memory</dt>
              <dd>{h.memory_rss_bytes ? `${fmtNum(h.memory_rss_bytes / 1048576, 1)} MiB` : '—'}</dd>
              <dt className="text-slate-500">Cluster</dt>
              <dd>{h.cluster}</dd>
              <dt className="text-slate-500">CPUs</dt>
              <dd>{h.cpu_count}</dd>
            </dl>
          ) : (
            <ErrorText error={health.error} />
          )}
        </Card>
      </div>
      <div className="grid gap-4 xl:grid-cols-3">
        <Card title="Recent runs" className="xl:col-span-2">
          <table className="w-full text-sm" aria-label="Recent runs">
            <thead className="text-left text-xs text-slate-500">
              <tr>
                <th className="py-1">Pipeline</th>
                <th>Status</th>
                <th>Started</th>
                <th className="text-right">Read</th>
                <th className="text-right">Written</th>
              </tr>
            </thead>
            <tbody>
              {runs.data?.items.map((r) => (
                <tr key={r.id} className="border-t border-slate-200 dark:border-slate-800">
                  <td className="py-1">
                    <Link className="text-indigo-600 hover:underline dark:text-indigo-400" to={`/runs/${r.id}`}>
                      {r.pipeline_name}
                    </Link>
                  </td>
                  <td>
                    <StatusBadge status={useLive.getState().runs[r.id]?.status ?? r.status} />
                  </td>
                  <td>{fmtDate(r.started_at ?? r.created_at)}</td>
                  <td className="text-right">{fmtNum(r.counts.records_read)}</td>
                  <td className="text-right">{fmtNum(r.counts.records_written)}</td>
                </tr>
              ))}
              {runs.data && runs.data.items.length === 0 && (
                <tr>
                  <td colSpan={5} className="py-2 text-slate-500">
                    No runs yet.
                  </td>
                </tr>
              )}
            </tbody>
          </table>
        </Card>
        <Card title="Errors (dead letters/s) and alerts">
          <div className="h-32" data-testid="error-chart">
            <ResponsiveContainer>
              <BarChart data={series}>
                <XAxis dataKey="label" hide />
                <YAxis fontSize={10} allowDecimals={false} width={30} />
                <Tooltip />
                <Bar dataKey="errors" name="dead letters" fill="#ef4444" isAnimationActive={false} />
              </BarChart>
            </ResponsiveContainer>
          </div>
          <ul className="mt-2 space-y-1 text-xs">
            {alerts.data?.items.map((a) => (
              <li key={a.id} className={a.severity === 'critical' || a.severity === 'error' ? 'text-red-600' : 'text-amber-600'}>
                {a.run_id ? <Link to={`/runs/${a.run_id}`}>{a.message}</Link> : a.message}
              </li>
            ))}
            {alerts.data && alerts.data.items.length === 0 && <li className="text-slate-500">No alerts.</li>}
          </ul>
        </Card>
      </div>
      <Card title="Cluster">
        {c ? (
          <table className="w-full text-sm" aria-label="Cluster members">
            <thead className="text-left text-xs text-slate-500">
              <tr>
                <th className="py-1">Node</th>
                <th>API</th>
                <th>Role</th>
                <th>State</th>
                <th className="text-right">Runs</th>
                <th className="text-right">Stage instances</th>
              </tr>
            </thead>
            <tbody>
              {c.members.map((m) => (
                <tr key={m.id} className="border-t border-slate-200 dark:border-slate-800" data-testid="cluster-member">
                  <td className="py-1">
                    {m.id}
                    {m.id === c.node_id ? ' (this node)' : ''}
                  </td>
                  <td className="font-mono text-xs">{m.api_addr || '—'}</td>
                  <td>{m.id === c.leader_id ? 'leader' : m.voter ? 'voter' : 'learner'}</td>
                  <td className={m.up ? 'text-emerald-600' : 'text-red-600'}>{m.up ? 'up' : 'down'}</td>
                  <td className="text-right">{fmtNum(m.runs)}</td>
                  <td className="text-right">{m.instances == null ? '—' : fmtNum(m.instances)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        ) : (
          <ErrorText error={cluster.error} />
        )}
      </Card>
    </div>
  );
}
