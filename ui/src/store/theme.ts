import { create } from 'zustand';

type Theme = 'light' | 'dark';

function initial(): Theme {
  const saved = localStorage.getItem('dagg-theme');
  if (saved === 'light' || saved === 'dark') return saved;
  return window.matchMedia?.('(prefers-color-scheme: dark)').matches ? 'dark' : 'light';
}

export const useTheme = create<{ theme: Theme; toggle: () => void }>((set, get) => ({
  theme: initial(),
  toggle: () => {
    const theme = get().theme === 'dark' ? 'light' : 'dark';
    localStorage.setItem('dagg-theme', theme);
    set({ theme });
  },
}));
