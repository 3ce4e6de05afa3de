// The dashboard's browser benchmarks (e2e/*.bench.ts): like the end-to-end tests, one file at a time against a real
// `basalt serve` in Debian's chromium; they print figures and assert no time. Run them with scripts/bench-list.sh.
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['e2e/**/*.bench.ts'],
    environment: 'node',
    fileParallelism: false,
    testTimeout: 1_800_000,
    hookTimeout: 120_000,
  },
});
