import { useEffect, useMemo, useState } from 'react';
import type { ColumnDef } from '@tanstack/react-table';
import { Plug, Plus, Save, Trash2 } from 'lucide-react';
import { del, get, post, put, qs, roleAtLeast, type Page } from '../api/client';
import { useAsync } from '../components/useAsync';
import { DataTable } from '../components/DataTable';
import { SchemaForm } from '../components/SchemaForm';
import { Card, ErrorText, fmtDate } from '../components/ui';
import { useAuth } from '../store/auth';
import { connectorSchema, loadSchemas, type Schemas } from '../lib/schemas';
import type { JsonObject } from '../lib/document';

interface Connector {
  id: string;
  name: string;
  description?: string | null;
  connector_type: string;
  config: JsonObject;
  updated_at: string;
}

interface TestResult {
  ok: boolean;
  role: string;
  message: string;
}

export function Connectors() {
  const me = useAuth((s) => s.me);
  const canEdit = roleAtLeast(me?.role, 'editor');
  const list = useAsync(() => get<Page<Connector>>(`/connectors${qs({ page_size: 500, sort: 'name' })}`), []);
  const [schemas, setSchemas] = useState<Schemas>();
  const [editing, setEditing] = useState<Partial<Connector> | null>(null);
  const [formKey, setFormKey] = useState(0);
  const [error, setError] = useState<unknown>();
  const [test, setTest] = useState<TestResult | null>(null);
  const [testRole, setTestRole] = useState('source');
  useEffect(() => {
    loadSchemas().then(setSchemas, setError);
  }, []);
  const open = (c: Partial<Connector>) => {
    setEditing(c);
    setTest(null);
    setError(undefined);
    setFormKey((k) => k + 1);
  };
  const columns = useMemo<ColumnDef<Connector, unknown>[]>(
    () => [
      { accessorKey: 'name', header: 'Name', cell: (c) => <button className="text-indigo-600 hover:underline dark:text-indigo-400" onClick={() => open(c.row.original)}>{String(c.getValue())}</button> },
      { accessorKey: 'connector_type', header: 'Type' },
      { accessorKey: 'description', header: 'Description' },
      { accessorKey: 'updated_at', header: 'Updated', cell: (c) => fmtDate(String(c.getValue())) },
    ],
    [],
  );
  const save = async () => {
    if (!editing) return;
    setError(undefined);
    try {
      const body = { name: editing.name, description: editing.description || undefined, connector_type: editing.connector_type, config: editing.config ?? {} };
      const saved = editing.id ? await put<Connector>(`/connectors/${editing.id}`, body) : await post<Connector>('/connectors', body);
      setEditing(saved);
      list.reload();
    } catch (e) {
      setError(e);
    }
  };
  const runTest = async () => {
    if (!editing?.id) return;
    setTest(null);
    try {
      setTest(await post<TestResult>(`/connectors/${editing.id}/test${qs({ role: testRole })}`));
    } catch (e) {
      setError(e);
    }
  };
  const schema = editing?.connector_type && schemas ? connectorSchema(schemas, editing.connector_type) : undefined;
  return (
    <div className="space-y-3">
      <div className="flex items-center justify-between">
        <h1 className="text-xl font-semibold">Connectors</h1>
        {canEdit && (
          <button className="btn-primary" onClick={() => open({ name: '', connector_type: 'file', config: {} })}>
            <Plus className="h-4 w-4" aria-hidden /> New connector
          </button>
        )}
      </div>
      <ErrorText error={list.error} />
      <div className="grid gap-4 xl:grid-cols-2">
        <DataTable label="Connectors" data={list.data?.items ?? []} columns={columns} csvName="connectors.csv" csvColumns={['id', 'name', 'connector_type', 'description', 'updated_at'].map((k) => ({ key: k, header: k }))} />
        {editing && (
          <Card title={editing.id ? `Connector: ${editing.name}` : 'New connector'}>
            <div className="space-y-3">
              <div>
                <label className="label" htmlFor="c-name">Name</label>
                <input id="c-name" className="input" disabled={!canEdit} value={editing.name ?? ''} onChange={(e) => setEditing({ ...editing, name: e.target.value })} />
              </div>
              <div>
                <label className="label" htmlFor="c-desc">Description</label>
                <input id="c-desc" className="input" disabled={!canEdit} value={editing.description ?? ''} onChange={(e) => setEditing({ ...editing, description: e.target.value })} />
              </div>
              <div>
                <label className="label" htmlFor="c-type">Type</label>
                <select id="c-type" className="input" disabled={!canEdit || !!editing.id} value={editing.connector_type} onChange={(e) => (setEditing({ ...editing, connector_type: e.target.value, config: {} }), setFormKey((k) => k + 1))}>
                  {(schemas?.connector_kinds ?? []).filter((k) => k.implemented).map((k) => (
                    <option key={k.connector_type}>{k.connector_type}</option>
                  ))}
                </select>
                {schema?.description && <p className="mt-0.5 text-xs text-slate-500">{schema.description}</p>}
              </div>
              {schema && <SchemaForm key={formKey} idPrefix="conn" schema={schema} value={editing.config ?? {}} readOnly={!canEdit} onChange={(config) => setEditing((e) => e && { ...e, config })} />}
              <ErrorText error={error} />
              {canEdit && (
                <div className="flex flex-wrap items-center gap-2">
                  <button className="btn-primary" onClick={save}>
                    <Save className="h-4 w-4" aria-hidden /> Save
                  </button>
                  {editing.id && (
                    <>
                      <select className="input w-32" aria-label="Test as" value={testRole} onChange={(e) => setTestRole(e.target.value)}>
                        <option value="source">as source</option>
                        <option value="sink">as destination</option>
                      </select>
                      <button className="btn" onClick={runTest}>
                        <Plug className="h-4 w-4" aria-hidden /> Test connection
                      </button>
                      <button className="btn ml-auto" onClick={async () => confirm(`Delete ${editing.name}?`) && (await del(`/connectors/${editing.id}`).catch(setError), setEditing(null), list.reload())}>
                        <Trash2 className="h-4 w-4" aria-hidden /> Delete
                      </button>
                    </>
                  )}
                </div>
              )}
              {test && (
                <p role="status" data-testid="test-result" className={test.ok ? 'text-sm text-emerald-600' : 'text-sm text-red-600'}>
                  {test.ok ? 'Connected' : 'Failed'} ({test.role}): {test.message}
                </p>
              )}
            </div>
          </Card>
        )}
      </div>
    </div>
  );
}
