import { useEffect } from 'react';
import { NavLink, Outlet, useNavigate } from 'react-router';
import { Activity, Boxes, Cable, LayoutDashboard, LogOut, Moon, Settings, Sun, Users, Wand2, Workflow } from 'lucide-react';
import { post, roleAtLeast } from '../api/client';
import { useAuth } from '../store/auth';
import { useTheme } from '../store/theme';
import { useLive } from '../store/live';

export function Layout() {
  const me = useAuth((s) => s.me);
  const refreshToken = useAuth((s) => s.refreshToken);
  const clear = useAuth((s) => s.clear);
  const { theme, toggle } = useTheme();
  const connected = useLive((s) => s.connected);
  const navigate = useNavigate();
  useEffect(() => {
    useLive.getState().start();
    return () => useLive.getState().stop();
  }, []);
  const logout = async () => {
    try {
      await post('/auth/logout', { refresh_token: refreshToken });
    } catch {
      /* the session is ended on this side either way */
    }
    useLive.getState().stop();
    clear();
    navigate('/login');
  };
  const link = ({ isActive }: { isActive: boolean }) => `flex items-center gap-2 rounded px-3 py-2 text-sm ${isActive ? 'bg-indigo-600 text-white' : 'hover:bg-slate-200 dark:hover:bg-slate-800'}`;
  return (
    <div className="flex min-h-screen">
      <a href="#main" className="sr-only focus:not-sr-only focus:absolute focus:p-2">
        Skip to content
      </a>
      <nav aria-label="Main" className="flex w-52 shrink-0 flex-col gap-1 border-r border-slate-200 bg-white p-3 dark:border-slate-800 dark:bg-slate-900">
        <div className="mb-3 flex items-center gap-2 px-2 text-lg font-bold">
          <Workflow className="h-5 w-5 text-indigo-500" aria-hidden /> dagg
        </div>
        <NavLink to="/" end className={link}>
          <LayoutDashboard className="h-4 w-4" aria-hidden /> Dashboard
        </NavLink>
        <NavLink to="/pipelines" className={link}>
          <Boxes className="h-4 w-4" aria-hidden /> Pipelines
        </NavLink>
        {roleAtLeast(me?.role, 'editor') && (
          <NavLink to="/builder" className={link}>
            <Workflow className="h-4 w-4" aria-hidden /> Builder
          </NavLink>
        )}
        <NavLink to="/runs" className={link}>
          <Activity className="h-4 w-4" aria-hidden /> Runs
        </NavLink>
        <NavLink to="/connectors" className={link}>
          <Cable className="h-4 w-4" aria-hidden /> Connectors
        </NavLink>
        <NavLink to="/transformations" className={link}>
          <Wand2 className="h-4 w-4" aria-hidden /> Transformations
        </NavLink>
        {roleAtLeast(me?.role, 'admin') && (
          <NavLink to="/users" className={link}>
            <Users className="h-4 w-4" aria-hidden /> Users
          </NavLink>
        )}
        <NavLink to="/settings" className={link}>
          <Settings className="h-4 w-4" aria-hidden /> Settings
        </NavLink>
        <div className="mt-auto space-y-2 border-t border-slate-200 pt-3 text-xs dark:border-slate-800">
          <div>
            <span className="font-medium" data-testid="whoami">{me?.username}</span> · <span data-testid="role">{me?.role}</span>
          </div>
          <div className="flex items-center gap-1" title="Live events">
            <span className={`inline-block h-2 w-2 rounded-full ${connected ? 'bg-emerald-500' : 'bg-slate-400'}`} aria-hidden /> {connected ? 'live' : 'offline'}
          </div>
          <div className="flex gap-2">
            <button className="btn" onClick={toggle} aria-label={`Switch to ${theme === 'dark' ? 'light' : 'dark'} theme`}>
              {theme === 'dark' ? <Sun className="h-4 w-4" /> : <Moon className="h-4 w-4" />}
            </button>
            <button className="btn" onClick={logout}>
              <LogOut className="h-4 w-4" aria-hidden /> Log out
            </button>
          </div>
        </div>
      </nav>
      <main id="main" className="min-w-0 flex-1 p-5">
        <Outlet />
      </main>
    </div>
  );
}
