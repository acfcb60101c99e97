import { useMemo, useState } from 'react';
import { Link, useNavigate } from 'react-router';
import type { ColumnDef } from '@tanstack/react-table';
import { Play, Plus } from 'lucide-react';
import { get, post, qs, roleAtLeast, type Page, type PipelineSummary, type Run } from '../api/client';
import { useAsync } from '../components/useAsync';
import { DataTable } from '../components/DataTable';
import { ErrorText, fmtDate } from '../components/ui';
import { useAuth } from '../store/auth';
import { kindsFor, loadSchemas } from '../lib/schemas';

export function Pipelines() {
  const me = useAuth((s) => s.me);
  const canEdit = roleAtLeast(me?.role, 'editor');
  const [paused, setPaused] = useState('');
  const [source, setSource] = useState('');
  const [error, setError] = useState<unknown>();
  const navigate = useNavigate();
  const schemas = useAsync(loadSchemas, []);
  const list = useAsync(() => get<Page<PipelineSummary>>(`/pipelines${qs({ page_size: 500, sort: '-updated_at', paused: paused || undefined, source_type: source || undefined })}`), [paused, source]);
  const columns = useMemo<ColumnDef<PipelineSummary, unknown>[]>(
    () => [
      { accessorKey: 'name', header: 'Name', cell: (c) => <Link className="text-indigo-600 hover:underline dark:text-indigo-400" to={`/pipelines/${c.row.original.id}`}>{String(c.getValue())}</Link> },
      { accessorKey: 'description', header: 'Description', cell: (c) => <span className="text-slate-500">{String(c.getValue() ?? '')}</span> },
      { accessorKey: 'source_type', header: 'Source' },
      { accessorFn: (p) => p.destination_types.join(', '), id: 'destinations', header: 'Destinations' },
      { accessorKey: 'schedule_type', header: 'Schedule' },
      { accessorKey: 'version', header: 'Version' },
      { accessorFn: (p) => (p.paused ? 'paused' : 'active'), id: 'state', header: 'State' },
      { accessorKey: 'updated_at', header: 'Updated', cell: (c) => fmtDate(String(c.getValue())) },
      ...(canEdit
        ? [
            {
              id: 'actions',
              header: 'Actions',
              enableSorting: false,
              cell: (c) => (
                <button
                  className="btn"
                  aria-label={`Run ${c.row.original.name}`}
                  onClick={async () => {
                    try {
                      const r = await post<Run>(`/pipelines/${c.row.original.id}/execute`);
                      navigate(`/runs/${r.id}`);
                    } catch (e) {
                      setError(e);
                    }
                  }}
                >
                  <Play className="h-3 w-3" aria-hidden /> Run
                </button>
              ),
            } as ColumnDef<PipelineSummary, unknown>,
          ]
        : []),
    ],
    [canEdit, navigate],
  );
  return (
    <div className="space-y-3">
      <div className="flex items-center justify-between">
        <h1 className="text-xl font-semibold">Pipelines</h1>
        {canEdit && (
          <Link className="btn-primary" to="/builder">
            <Plus className="h-4 w-4" aria-hidden /> New pipeline
          </Link>
        )}
      </div>
      <ErrorText error={list.error ?? error} />
      <DataTable
        label="Pipelines"
        data={list.data?.items ?? []}
        columns={columns}
        csvName="pipelines.csv"
        csvColumns={['id', 'name', 'description', 'source_type', 'schedule_type', 'version', 'paused', 'created_at', 'updated_at'].map((k) => ({ key: k, header: k }))}
        filters={
          <>
            <label className="text-sm">
              <span className="sr-only">State</span>
              <select className="input w-32" value={paused} onChange={(e) => setPaused(e.target.value)} aria-label="Filter by state">
                <option value="">Any state</option>
                <option value="false">Active</option>
                <option value="true">Paused</option>
              </select>
            </label>
            <label className="text-sm">
              <select className="input w-36" value={source} onChange={(e) => setSource(e.target.value)} aria-label="Filter by source type">
                <option value="">Any source</option>
                {(schemas.data ? kindsFor(schemas.data, 'source') : []).map((k) => (
                  <option key={k.connector_type}>{k.connector_type}</option>
                ))}
              </select>
            </label>
          </>
        }
      />
    </div>
  );
}
