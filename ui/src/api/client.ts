// The admin API: JSON over fetch with the access token, refreshed once on a 401.
import { useAuth } from '../store/auth';

export interface ErrorDetail {
  path: string;
  message: string;
}

export class ApiError extends Error {
  status: number;
  code: string;
  details: ErrorDetail[];
  constructor(status: number, code: string, message: string, details: ErrorDetail[] = []) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

export interface Page<T> {
  items: T[];
  total: number;
  page: number;
  page_size: number;
}

export type Role = 'viewer' | 'editor' | 'admin';

export interface Me {
  id: string;
  username: string;
  email?: string | null;
  full_name?: string | null;
  role: Role;
}

export interface RunCounts {
  records_read?: number;
  records_written?: number;
  dead_lettered?: number;
  dropped?: number;
  filtered?: number;
  attempts?: number;
  [k: string]: number | undefined;
}

export interface Run {
  id: string;
  pipeline_id: string;
  pipeline_name: string;
  pipeline_version: number;
  status: string;
  trigger: string;
  triggered_by: string;
  created_at: string;
  started_at?: string | null;
  finished_at?: string | null;
  duration_seconds?: number | null;
  counts: RunCounts;
  throughput?: number | null;
  error?: string | null;
}

export interface PipelineSummary {
  id: string;
  name: string;
  description?: string | null;
  version: number;
  paused: boolean;
  source_type: string;
  destination_types: string[];
  schedule_type: string;
  created_at: string;
  updated_at: string;
}

export interface PipelineDetail extends PipelineSummary {
  document: Record<string, unknown>;
  last_run?: Run | null;
}

let refreshing: Promise<boolean> | null = null;

async function refresh(): Promise<boolean> {
  const { refreshToken, setTokens, clear } = useAuth.getState();
  if (!refreshToken) return false;
  refreshing ??= (async () => {
    try {
      const r = await fetch('/auth/refresh', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ refresh_token: refreshToken }) });
      if (!r.ok) {
        clear();
        return false;
      }
      const t = await r.json();
      setTokens(t.access_token, t.refresh_token);
      return true;
    } finally {
      setTimeout(() => (refreshing = null), 0);
    }
  })();
  return refreshing;
}

export async function api<T = unknown>(method: string, path: string, body?: unknown, retry = true): Promise<T> {
  const token = useAuth.getState().accessToken;
  const headers: Record<string, string> = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (r.status === 401 && retry && path !== '/auth/login' && (await refresh())) return api<T>(method, path, body, false);
  const text = await r.text();
  const data = text ? JSON.parse(text) : null;
  if (!r.ok) {
    const e = data?.error ?? {};
    throw new ApiError(r.status, e.code ?? String(r.status), e.message ?? r.statusText, e.details ?? []);
  }
  return data as T;
}

export const get = <T>(path: string) => api<T>('GET', path);
export const post = <T>(path: string, body?: unknown) => api<T>('POST', path, body ?? {});
export const put = <T>(path: string, body: unknown) => api<T>('PUT', path, body);
export const del = <T>(path: string) => api<T>('DELETE', path);

export function qs(params: Record<string, string | number | boolean | undefined | null>): string {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') p.set(k, String(v));
  const s = p.toString();
  return s ? `?${s}` : '';
}

export function roleAtLeast(role: Role | undefined, need: Role): boolean {
  const rank = { viewer: 0, editor: 1, admin: 2 };
  return role !== undefined && rank[role] >= rank[need];
}
