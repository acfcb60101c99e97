import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';
import tailwindcss from '@tailwindcss/vite';

// Served by `dagg serve` under /ui/. `npm run dev` proxies the API to a local `dagg serve`.
const api = process.env.DAGG_API ?? 'http://127.0.0.1:8001';
const apiPaths = ['/auth', '/me', '/users', '/pipelines', '/runs', '/connectors', '/transformations', '/monitoring', '/analytics', '/schemas', '/health', '/settings', '/audit', '/openapi.json'];

export default defineConfig({
  base: '/ui/',
  plugins: [react(), tailwindcss()],
  server: {
    proxy: Object.fromEntries([...apiPaths.map((p) => [p, api]), ['/ws', { target: api, ws: true }]]),
  },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    chunkSizeWarningLimit: 1200,
    rollupOptions: {
      output: {
        manualChunks(id: string) {
          if (id.includes('node_modules/recharts') || id.includes('node_modules/d3-')) return 'charts';
          if (id.includes('node_modules/@xyflow')) return 'flow';
          if (id.includes('node_modules/')) return 'vendor';
        },
      },
    },
  },
  test: {
    include: ['src/**/*.test.ts'],
    environment: 'node',
  },
});
