// The embedded default base image: making it (debootstrap → trimmed rootfs → reproducible tar+gzip,
// cached) and publishing it as a one-layer OCI image.
export { makeDebianBase, systemMirror, DEFAULT_SOURCE_DATE_EPOCH, type DebianBase, type DebianBaseOptions } from './debian-base.js';
export { packRootfs, type PackedLayer, type PackOptions } from './pack-rootfs.js';
export { pushBaseImage, baseImageDocuments, DEFAULT_PATH, type BaseLayerInput, type PushedBaseImage } from './push-base.js';
