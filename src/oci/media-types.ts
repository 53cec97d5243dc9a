// Media types of the image formats obdkit reads and writes: Docker v2 schema 2 and OCI image-spec.
// The manifest/index parsers in types.ts dispatch on these; overlaybd.ts names the layer types an
// overlaybd blob is published under (uncompressed tar, because the blob itself is a tar wrapper).

export const MediaType = {
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerLayerTar: 'application/vnd.docker.image.rootfs.diff.tar',
  dockerLayerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  dockerForeignLayerGzip: 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayerTar: 'application/vnd.oci.image.layer.v1.tar',
  ociLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  ociLayerZstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  ociEmpty: 'application/vnd.oci.empty.v1+json',
} as const;

/** Media types that describe a single-platform image manifest. */
export const manifestMediaTypes: readonly string[] = [MediaType.dockerManifest, MediaType.ociManifest];
/** Media types that describe a list of manifests (multi-platform). */
export const indexMediaTypes: readonly string[] = [MediaType.dockerManifestList, MediaType.ociIndex];

/** The Accept header for manifest GET/HEAD: every type we can parse, preferred ones first. */
export const manifestAccept: string = [
  MediaType.ociIndex,
  MediaType.dockerManifestList,
  MediaType.ociManifest,
  MediaType.dockerManifest,
].join(', ');

export function isManifestMediaType(mt: string | undefined): boolean {
  return mt !== undefined && manifestMediaTypes.includes(mt);
}

export function isIndexMediaType(mt: string | undefined): boolean {
  return mt !== undefined && indexMediaTypes.includes(mt);
}
