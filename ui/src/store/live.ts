// Live events from /ws: run status changes and progress, kept as short series for charts.
import { create } from 'zustand';
import { useAuth } from './auth';
import { api, type Run } from '../api/client';

export interface LivePoint {
  t: number;
  label: string;
  read: number;
  written: number;
  errors: number;
}

interface LiveState {
  connected: boolean;
  runs: Record<string, Partial<Run> & { id: string }>;
  series: LivePoint[];
  lastEvent: number;
  start: () => void;
  stop: () => void;
}

let socket: WebSocket | null = null;
let timer: ReturnType<typeof setInterval> | null = null;
let stopped = true;
let connecting = false;
// Per-second totals gathered from progress events, folded into the series each second.
let bucket = { read: 0, written: 0, errors: 0 };
const seen: Record<string, { read: number; written: number; dead: number }> = {};

export const useLive = create<LiveState>((set, get) => ({
  connected: false,
  runs: {},
  series: [],
  lastEvent: 0,
  start: () => {
    stopped = false;
    if (socket || connecting) return;
    connecting = true;
    // A cheap call first: it refreshes an expired access token before the socket uses it.
    void api('GET', '/me')
      .catch(() => undefined)
      .finally(() => {
        connecting = false;
        if (!stopped && !socket) open(set, get);
      });
    timer ??= setInterval(() => {
      const now = new Date();
      const point = { t: now.getTime(), label: now.toLocaleTimeString(), ...bucket };
      bucket = { read: 0, written: 0, errors: 0 };
      set({ series: [...get().series.slice(-59), point] });
    }, 1000);
  },
  stop: () => {
    stopped = true;
    socket?.close();
    socket = null;
    if (timer) clearInterval(timer);
    timer = null;
    set({ connected: false, series: [] });
  },
}));

type Set = (p: Partial<LiveState>) => void;
type Get = () => LiveState;

function open(set: Set, get: Get) {
    const token = useAuth.getState().accessToken;
    if (!token) return;
    const proto = location.protocol === 'https:' ? 'wss' : 'ws';
    socket = new WebSocket(`${proto}://${location.host}/ws?access_token=${encodeURIComponent(token)}`);
    socket.onopen = () => set({ connected: true });
    socket.onclose = () => {
      socket = null;
      set({ connected: false });
      if (!stopped) setTimeout(() => get().start(), 2000);
    };
    socket.onmessage = (m) => {
      let ev: Record<string, unknown>;
      try {
        ev = JSON.parse(m.data);
      } catch {
        return;
      }
      const run = (ev.run ?? ev) as Partial<Run> & { id?: string; run_id?: string };
      const id = (run.id ?? run.run_id ?? ev.run_id) as string | undefined;
      // Records per second: the growth of each run's counters between events (a run shorter
      // than a second still counts, through its final status event).
      if (id && (ev.type === 'run_progress' || ev.type === 'run_status')) {
        const c = (ev.counts ?? {}) as Record<string, number>;
        const prev = seen[id] ?? { read: 0, written: 0, dead: 0 };
        const now = { read: Number(c.records_read ?? 0), written: Number(c.records_written ?? 0), dead: Number(c.dead_lettered ?? 0) };
        bucket.read += Math.max(0, now.read - prev.read);
        bucket.written += Math.max(0, now.written - prev.written);
        bucket.errors += Math.max(0, now.dead - prev.dead);
        seen[id] = now;
      }
      if (id && (ev.type === 'run_status' || ev.type === 'run_progress')) {
        const prev = get().runs[id] ?? { id };
        const next = { ...prev, ...run, id } as Partial<Run> & { id: string };
        if (ev.status) next.status = String(ev.status);
        if (ev.counts) next.counts = ev.counts as Run['counts'];
        set({ runs: { ...get().runs, [id]: next }, lastEvent: Date.now() });
      }
    };
}
