import type { ReactNode } from 'react';

const STATUS: Record<string, string> = {
  success: 'bg-emerald-100 text-emerald-800 dark:bg-emerald-900 dark:text-emerald-200',
  warning: 'bg-amber-100 text-amber-800 dark:bg-amber-900 dark:text-amber-200',
  failed: 'bg-red-100 text-red-800 dark:bg-red-900 dark:text-red-200',
  cancelled: 'bg-slate-200 text-slate-700 dark:bg-slate-700 dark:text-slate-200',
  running: 'bg-sky-100 text-sky-800 dark:bg-sky-900 dark:text-sky-200',
  retrying: 'bg-orange-100 text-orange-800 dark:bg-orange-900 dark:text-orange-200',
  pending: 'bg-slate-100 text-slate-700 dark:bg-slate-800 dark:text-slate-300',
};

export function StatusBadge({ status }: { status: string }) {
  return <span data-testid="run-status" className={`rounded px-2 py-0.5 text-xs font-medium ${STATUS[status] ?? STATUS.pending}`}>{status}</span>;
}

export function Card({ title, children, actions, className = '' }: { title?: ReactNode; children: ReactNode; actions?: ReactNode; className?: string }) {
  return (
    <section className={`card ${className}`} aria-label={typeof title === 'string' ? title : undefined}>
      {(title || actions) && (
        <div className="mb-3 flex items-center justify-between gap-2">
          {title && <h2 className="text-sm font-semibold">{title}</h2>}
          {actions}
        </div>
      )}
      {children}
    </section>
  );
}

export function Stat({ label, value, hint }: { label: string; value: ReactNode; hint?: string }) {
  return (
    <div className="card" role="group" aria-label={label}>
      <div className="text-xs text-slate-500">{label}</div>
      <div className="mt-1 text-2xl font-semibold" data-testid={`stat-${label.toLowerCase().replace(/\s+/g, '-')}`}>{value}</div>
      {hint && <div className="text-xs text-slate-500">{hint}</div>}
    </div>
  );
}

export function ErrorText({ error }: { error: unknown }) {
  if (!error) return null;
  const msg = error instanceof Error ? error.message : String(error);
  const details = (error as { details?: { path: string; message: string }[] }).details ?? [];
  return (
    <div role="alert" className="rounded border border-red-300 bg-red-50 p-2 text-sm text-red-800 dark:border-red-800 dark:bg-red-950 dark:text-red-200">
      {msg}
      {details.length > 0 && (
        <ul className="mt-1 list-disc pl-5">
          {details.map((d, i) => (
            <li key={i}>
              <code>{d.path}</code>: {d.message}
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}

export function fmtDate(s?: string | null): string {
  return s ? new Date(s).toLocaleString() : '—';
}

export function fmtNum(n?: number | null, digits = 0): string {
  return n === undefined || n === null ? '—' : n.toLocaleString(undefined, { maximumFractionDigits: digits });
}

export function JsonView({ value, className = '' }: { value: unknown; className?: string }) {
  return <pre className={`overflow-auto rounded bg-slate-100 p-2 text-xs dark:bg-slate-950 ${className}`}>{JSON.stringify(value, null, 2)}</pre>;
}
