// The device layer's Linux calls (mount/umount2 for the FUSE mount, page-cache hints for the upper
// file) live with every other koffi binding in src/util/syscalls.ts; this name stays for its importers.
export * from '../../src/util/syscalls.js';
