import { useMemo, useState } from 'react';
import type { ColumnDef } from '@tanstack/react-table';
import { useForm } from 'react-hook-form';
import { zodResolver } from '@hookform/resolvers/zod';
import { z } from 'zod';
import { Plus } from 'lucide-react';
import { del, get, post, put, qs, type Page, type Role } from '../api/client';
import { useAsync } from '../components/useAsync';
import { DataTable } from '../components/DataTable';
import { Card, ErrorText, fmtDate } from '../components/ui';

interface User {
  id: string;
  username: string;
  email?: string | null;
  full_name?: string | null;
  role: Role;
  disabled: boolean;
  created_at: string;
}

const schema = z.object({
  username: z.string().trim().min(1, 'Required'),
  email: z.union([z.literal(''), z.email('Not an e-mail address')]),
  full_name: z.string(),
  role: z.enum(['viewer', 'editor', 'admin']),
  password: z.string().min(8, 'At least 8 characters'),
});
type Form = z.infer<typeof schema>;

export function UsersPage() {
  const list = useAsync(() => get<Page<User>>(`/users${qs({ page_size: 500, sort: 'username' })}`), []);
  const [error, setError] = useState<unknown>();
  const [adding, setAdding] = useState(false);
  const { register, handleSubmit, formState, reset } = useForm<Form>({ resolver: zodResolver(schema), defaultValues: { role: 'viewer', email: '', full_name: '' } });
  const act = (fn: () => Promise<unknown>) => fn().then(list.reload, setError);
  const columns = useMemo<ColumnDef<User, unknown>[]>(
    () => [
      { accessorKey: 'username', header: 'User' },
      { accessorKey: 'full_name', header: 'Name' },
      { accessorKey: 'email', header: 'E-mail' },
      {
        accessorKey: 'role',
        header: 'Role',
        cell: (c) => (
          <select className="input w-28" aria-label={`Role of ${c.row.original.username}`} value={c.row.original.role} onChange={(e) => act(() => put(`/users/${c.row.original.id}`, { role: e.target.value }))}>
            <option>viewer</option>
            <option>editor</option>
            <option>admin</option>
          </select>
        ),
      },
      {
        accessorKey: 'disabled',
        header: 'Enabled',
        cell: (c) => <input type="checkbox" aria-label={`${c.row.original.username} enabled`} checked={!c.row.original.disabled} onChange={(e) => act(() => put(`/users/${c.row.original.id}`, { disabled: !e.target.checked }))} />,
      },
      { accessorKey: 'created_at', header: 'Created', cell: (c) => fmtDate(String(c.getValue())) },
      { id: 'delete', header: '', enableSorting: false, cell: (c) => <button className="btn" onClick={() => confirm(`Delete ${c.row.original.username}?`) && act(() => del(`/users/${c.row.original.id}`))}>Delete</button> },
    ],
    // eslint-disable-next-line react-hooks/exhaustive-deps
    [],
  );
  const create = async (f: Form) => {
    setError(undefined);
    try {
      await post('/users', { ...f, email: f.email || undefined, full_name: f.full_name || undefined });
      reset();
      setAdding(false);
      list.reload();
    } catch (e) {
      setError(e);
    }
  };
  return (
    <div className="space-y-3">
      <div className="flex items-center justify-between">
        <h1 className="text-xl font-semibold">Users</h1>
        <button className="btn-primary" onClick={() => setAdding(true)}><Plus className="h-4 w-4" aria-hidden /> New user</button>
      </div>
      <ErrorText error={list.error ?? error} />
      {adding && (
        <Card title="New user">
          <form className="grid gap-2 md:grid-cols-5" onSubmit={handleSubmit(create)}>
            {(['username', 'email', 'full_name', 'password'] as const).map((k) => (
              <div key={k}>
                <label className="label" htmlFor={`u-${k}`}>{k.replace('_', ' ')}</label>
                <input id={`u-${k}`} className="input" type={k === 'password' ? 'password' : 'text'} {...register(k)} />
                {formState.errors[k] && <p className="text-xs text-red-600">{formState.errors[k]?.message}</p>}
              </div>
            ))}
            <div>
              <label className="label" htmlFor="u-role">role</label>
              <select id="u-role" className="input" {...register('role')}><option>viewer</option><option>editor</option><option>admin</option></select>
            </div>
            <div className="md:col-span-5"><button className="btn-primary" type="submit">Create</button></div>
          </form>
        </Card>
      )}
      <DataTable label="Users" data={list.data?.items ?? []} columns={columns} csvName="users.csv" csvColumns={['id', 'username', 'full_name', 'email', 'role', 'disabled', 'created_at'].map((k) => ({ key: k, header: k }))} />
    </div>
  );
}
