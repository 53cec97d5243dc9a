// The exporter's public surface: assemble an overlaybd image, then write it as an OCI layout tar,
// a docker archive, push it to a registry, or pack a rootfs tree as a tar.
export * from './canonical-json.js';
export * from './image-config.js';
export * from './image.js';
export * from './archive-writers.js';
export * from './registry-push.js';
export * from './rootfs-tar.js';
