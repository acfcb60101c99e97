import { create } from 'zustand';
import { persist } from 'zustand/middleware';
import type { Me } from '../api/client';

interface AuthState {
  accessToken: string | null;
  refreshToken: string | null;
  me: Me | null;
  setTokens: (access: string, refresh: string) => void;
  setMe: (me: Me | null) => void;
  clear: () => void;
}

// The session survives a reload (sessionStorage: it ends with the tab).
export const useAuth = create<AuthState>()(
  persist(
    (set) => ({
      accessToken: null,
      refreshToken: null,
      me: null,
      setTokens: (accessToken, refreshToken) => set({ accessToken, refreshToken }),
      setMe: (me) => set({ me }),
      clear: () => set({ accessToken: null, refreshToken: null, me: null }),
    }),
    { name: 'dagg-session', storage: { getItem: (k) => JSON.parse(sessionStorage.getItem(k) ?? 'null'), setItem: (k, v) => sessionStorage.setItem(k, JSON.stringify(v)), removeItem: (k) => sessionStorage.removeItem(k) } },
  ),
);
