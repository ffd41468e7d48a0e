// How many cases a fast-check property runs: its own count, scaled by FC_RUNS_SCALE (vitest.config.ts
// sets a quarter for the debug build, whose part is its assertions; 10 makes a long local soak).
const SCALE = Number(process.env.FC_RUNS_SCALE ?? 1);

export const runs = (n: number): number => Math.max(1, Math.round(n * SCALE));
