import { useState } from 'react';
import { KeyRound, Save, Trash2 } from 'lucide-react';
import { del, get, post, put, qs, roleAtLeast, type Page } from '../api/client';
import { useAsync } from '../components/useAsync';
import { Card, ErrorText, fmtDate } from '../components/ui';
import { useAuth } from '../store/auth';
import { useTheme } from '../store/theme';

interface Key {
  id: string;
  name: string;
  prefix: string;
  created_at: string;
  expires_at?: string | null;
}

export function SettingsPage() {
  const me = useAuth((s) => s.me);
  const { theme, toggle } = useTheme();
  const keys = useAsync(() => get<Page<Key>>(`/me/api-keys${qs({ page_size: 100 })}`), []);
  const [keyName, setKeyName] = useState('');
  const [days, setDays] = useState('');
  const [newKey, setNewKey] = useState<string>();
  const [error, setError] = useState<unknown>();
  const [pw, setPw] = useState({ current_password: '', new_password: '' });
  const [pwDone, setPwDone] = useState(false);
  const isAdmin = roleAtLeast(me?.role, 'admin');
  return (
    <div className="max-w-4xl space-y-4">
      <h1 className="text-xl font-semibold">Settings</h1>
      <ErrorText error={error} />
      <Card title="Appearance">
        <button className="btn" onClick={toggle}>Theme: {theme} (switch)</button>
      </Card>
      <Card title="API keys">
        <div className="flex flex-wrap gap-2">
          <input className="input w-56" aria-label="Key name" placeholder="key name" value={keyName} onChange={(e) => setKeyName(e.target.value)} />
          <input className="input w-40" aria-label="Expires in days" placeholder="expires in days" value={days} onChange={(e) => setDays(e.target.value)} />
          <button className="btn-primary" onClick={async () => {
            try {
              const k = await post<{ key: string }>('/me/api-keys', { name: keyName, expires_in_days: days ? Number(days) : undefined });
              setNewKey(k.key);
              setKeyName('');
              keys.reload();
            } catch (e) {
              setError(e);
            }
          }}>
            <KeyRound className="h-4 w-4" aria-hidden /> Create key
          </button>
        </div>
        {newKey && <p className="mt-2 text-sm" role="status">New key (shown once): <code className="select-all">{newKey}</code></p>}
        <ul className="mt-3 space-y-1 text-sm">
          {keys.data?.items.map((k) => (
            <li key={k.id} className="flex items-center gap-2">
              <b>{k.name}</b> <code>{k.prefix}…</code> <span className="text-xs text-slate-500">created {fmtDate(k.created_at)}{k.expires_at ? `, expires ${fmtDate(k.expires_at)}` : ''}</span>
              <button className="btn ml-auto" aria-label={`Revoke ${k.name}`} onClick={() => del(`/me/api-keys/${k.id}`).then(keys.reload, setError)}><Trash2 className="h-3 w-3" /></button>
            </li>
          ))}
        </ul>
      </Card>
      <Card title="Password">
        <div className="flex flex-wrap gap-2">
          <input className="input w-56" type="password" aria-label="Current password" placeholder="current password" value={pw.current_password} onChange={(e) => setPw({ ...pw, current_password: e.target.value })} />
          <input className="input w-56" type="password" aria-label="New password" placeholder="new password" value={pw.new_password} onChange={(e) => setPw({ ...pw, new_password: e.target.value })} />
          <button className="btn" onClick={() => put('/me/password', pw).then(() => setPwDone(true), setError)}>Change</button>
          {pwDone && <span className="text-sm text-emerald-600">Changed.</span>}
        </div>
      </Card>
      {isAdmin && <SystemSettings onError={setError} />}
    </div>
  );
}

// The `notifications` setting (admin): how failed-run notifications are sent (a webhook's
// signing secret, the SMTP relay). Which pipelines notify whom is in each pipeline's
// `error_handling.notifications`. The server never sends secrets back, so saving asks for
// them again when they are set.
const FIELDS: [string, string, boolean][] = [
  ['webhook_secret', 'Webhook signing secret (HMAC-SHA256)', true],
  ['smtp.host', 'SMTP host', false],
  ['smtp.port', 'SMTP port (default 25)', false],
  ['smtp.from', 'Sender address', false],
  ['smtp.username', 'SMTP user name', false],
  ['smtp.password', 'SMTP password', true],
];
const MASK = '********';

function SystemSettings({ onError }: { onError: (e: unknown) => void }) {
  const s = useAsync(() => get<Record<string, unknown>>('/settings'), []);
  const [draft, setDraft] = useState<Record<string, string>>({});
  const [saved, setSaved] = useState(false);
  const n = (s.data?.notifications ?? {}) as Record<string, unknown>;
  const stored = (k: string): unknown => k.split('.').reduce<unknown>((o, p) => (o && typeof o === 'object' ? (o as Record<string, unknown>)[p] : undefined), n);
  const val = (k: string, secret: boolean) => draft[k] ?? (secret ? '' : String(stored(k) ?? ''));
  const save = () => {
    setSaved(false);
    const out: Record<string, unknown> = {};
    const smtp: Record<string, unknown> = {};
    for (const [k, , secret] of FIELDS) {
      const v = val(k, secret).trim();
      if (secret && !v && stored(k) === MASK) return onError(new Error(`Enter the ${k.replace('smtp.', 'SMTP ')} again: the server does not send secrets back, and saving replaces the whole setting.`));
      if (!v) continue;
      if (k.startsWith('smtp.')) smtp[k.slice(5)] = k === 'smtp.port' ? Number(v) : v;
      else out[k] = v;
    }
    if (Object.keys(smtp).length) out.smtp = smtp;
    put('/settings', { notifications: out }).then(() => (setDraft({}), setSaved(true), s.reload()), onError);
  };
  return (
    <Card title="Notifications (admin)">
      <div className="space-y-2">
        <p className="text-xs text-slate-500">How failed runs are announced. Each pipeline names its recipients in <code>error_handling.notifications</code> (<code>email</code>, <code>webhook</code>).</p>
        {FIELDS.map(([k, label, secret]) => (
          <div key={k}>
            <label className="label" htmlFor={`n-${k}`}>{label}</label>
            <input id={`n-${k}`} className="input" type={secret ? 'password' : 'text'} placeholder={secret && stored(k) === MASK ? 'set (enter again to keep it)' : ''} value={val(k, secret)} onChange={(e) => setDraft({ ...draft, [k]: e.target.value })} />
          </div>
        ))}
        <button className="btn-primary" onClick={save}>
          <Save className="h-4 w-4" aria-hidden /> Save
        </button>
        {saved && <span className="ml-2 text-sm text-emerald-600" role="status">Saved.</span>}
      </div>
    </Card>
  );
}
