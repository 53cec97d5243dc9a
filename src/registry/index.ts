// Public surface of the registry client. Typical use:
//   const client = new RegistryClient({ credentials, hosts: { 'reg:5000': { insecure: true } } });
//   const img = await resolveImage(client, parseReference('reg:5000/app:1'));
//   const blob = new RemoteBlob(client, img.ref, img.manifest.layers[0].digest, { cache });
//   await pushImage(client, ref, { manifest, mediaType, blobs });
export * from './reference.js';
export * from './credentials.js';
export { RegistryClient, type RegistryClientOptions, type RegistryHostOptions } from './client.js';
export * from './pull.js';
export * from './upload.js';
export * from './push.js';
export * from './copy.js';
export * from './remote-blob.js';
export * from './chunk-cache.js';
