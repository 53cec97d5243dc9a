// Public surface of the OCI document module: types, parsers, media types, platforms, annotations.
export * from './media-types.js';
export * from './digest.js';
export * from './types.js';
export * from './platform.js';
export * from './overlaybd.js';
