import { StrictMode, Suspense, lazy, useEffect, type ReactNode } from 'react';
import { createRoot } from 'react-dom/client';
import { BrowserRouter, Navigate, Route, Routes } from 'react-router';
import './index.css';
import { useAuth } from './store/auth';
import { useTheme } from './store/theme';
import { get, roleAtLeast, type Me, type Role } from './api/client';
import { Layout } from './components/Layout';
import { Login } from './pages/Login';
import { Dashboard } from './pages/Dashboard';
import { Pipelines } from './pages/Pipelines';
import { PipelinePage } from './pages/PipelinePage';
import { RunPage, Runs } from './pages/Runs';
import { Connectors } from './pages/Connectors';
import { Transformations } from './pages/Transformations';
import { UsersPage } from './pages/Users';
import { SettingsPage } from './pages/Settings';

const Builder = lazy(() => import('./pages/Builder'));

function RequireAuth({ children, role }: { children: ReactNode; role?: Role }) {
  const token = useAuth((s) => s.accessToken);
  const me = useAuth((s) => s.me);
  useEffect(() => {
    if (token && !me) get<Me>('/me').then((m) => useAuth.getState().setMe(m)).catch(() => useAuth.getState().clear());
  }, [token, me]);
  if (!token) return <Navigate to="/login" replace />;
  if (!me) return <p className="p-4">Loading…</p>;
  if (role && !roleAtLeast(me.role, role)) return <p className="p-4">Your role ({me.role}) may not open this page.</p>;
  return <>{children}</>;
}

function App() {
  const theme = useTheme((s) => s.theme);
  useEffect(() => {
    document.documentElement.classList.toggle('dark', theme === 'dark');
  }, [theme]);
  return (
    <BrowserRouter basename="/ui">
      <Suspense fallback={<p className="p-4">Loading…</p>}>
        <Routes>
          <Route path="/login" element={<Login />} />
          <Route element={<RequireAuth><Layout /></RequireAuth>}>
            <Route index element={<Dashboard />} />
            <Route path="pipelines" element={<Pipelines />} />
            <Route path="pipelines/:id" element={<PipelinePage />} />
            <Route path="builder" element={<RequireAuth role="editor"><Builder /></RequireAuth>} />
            <Route path="builder/:id" element={<RequireAuth role="editor"><Builder /></RequireAuth>} />
            <Route path="runs" element={<Runs />} />
            <Route path="runs/:id" element={<RunPage />} />
            <Route path="connectors" element={<Connectors />} />
            <Route path="transformations" element={<Transformations />} />
            <Route path="users" element={<RequireAuth role="admin"><UsersPage /></RequireAuth>} />
            <Route path="settings" element={<SettingsPage />} />
            <Route path="*" element={<p>No such page.</p>} />
          </Route>
        </Routes>
      </Suspense>
    </BrowserRouter>
  );
}

createRoot(document.getElementById('root')!).render(
  <StrictMode>
    <App />
  </StrictMode>,
);
