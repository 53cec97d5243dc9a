// The solver's public surface: op graph types, cache keys, the cache index and the Solver.
export * from './ops.js';
export * from './cache-key.js';
export * from './cache-index.js';
export * from './solver.js';
