// The two file outputs of an assembled image (image.ts):
//  - `type=oci,dest=FILE`: an OCI image layout in a tar (oci-layout, index.json, blobs/sha256/*),
//    what `skopeo inspect oci-archive:FILE` and `ctr import` read;
//  - `type=docker,dest=FILE` (the image-tar form of `type=tar`): a docker-archive (manifest.json
//    naming the config and layer files, plus the same blobs/sha256 tree and index.json, as
//    `docker save` ≥ 25 writes it), what `docker load` and `skopeo … docker-archive:FILE` read.
// BuildKit's plain `type=tar` (the rootfs itself as a tarball) is rootfs-tar.ts.
// Blobs are streamed from their files through tar-writer.ts.
import { MediaType } from '../oci/media-types.js';
import { canonicalJsonBytes, type JsonValue } from './canonical-json.js';
import { checkLayerFiles, descriptorJson, type ExportImage } from './image.js';
import { writeTarFile, type TarFileWriter } from './tar-writer.js';

export interface ArchiveOptions {
  /** Image names such as `docker.io/library/app:1` (annotations in OCI; RepoTags in docker archives). */
  names?: string[];
}

function blobPath(digest: string): string {
  const [algo, hex] = digest.split(':');
  return `blobs/${algo}/${hex}`;
}

async function writeBlobs(w: TarFileWriter, image: ExportImage): Promise<void> {
  await w.addDirectory('blobs/');
  await w.addDirectory('blobs/sha256/');
  const seen = new Set<string>();
  for (const l of image.layers) {
    if (seen.has(l.descriptor.digest)) continue;
    seen.add(l.descriptor.digest);
    await w.addFile(blobPath(l.descriptor.digest), l.path, l.descriptor.size, l.descriptor.digest);
  }
  await w.addBuffer(blobPath(image.configDescriptor.digest), image.config);
  await w.addBuffer(blobPath(image.manifestDescriptor.digest), image.manifest);
}

/** The index.json of an OCI layout holding this one image, tagged with `names`. */
export function ociIndex(image: ExportImage, names: string[] = []): Buffer {
  const entries: JsonValue[] = [];
  const tags = names.length ? names : [undefined];
  for (const name of tags) {
    const d = descriptorJson(image.manifestDescriptor);
    if (name !== undefined) {
      d['annotations'] = {
        'io.containerd.image.name': name,
        'org.opencontainers.image.ref.name': refName(name),
      };
    }
    entries.push(d);
  }
  return canonicalJsonBytes({ schemaVersion: 2, mediaType: MediaType.ociIndex, manifests: entries });
}

/** The tag of a full name (`reg/repo:tag` → `tag`), as the OCI layout ref.name convention has it. */
function refName(name: string): string {
  const slash = name.lastIndexOf('/');
  const colon = name.lastIndexOf(':');
  return colon > slash ? name.slice(colon + 1) : 'latest';
}

export async function writeOciArchive(image: ExportImage, dest: string, opts: ArchiveOptions = {}): Promise<void> {
  await checkLayerFiles(image);
  await writeTarFile(dest, async (w) => {
    await w.addBuffer('oci-layout', canonicalJsonBytes({ imageLayoutVersion: '1.0.0' }));
    await writeBlobs(w, image);
    await w.addBuffer('index.json', ociIndex(image, opts.names));
  });
}

export async function writeDockerArchive(image: ExportImage, dest: string, opts: ArchiveOptions = {}): Promise<void> {
  await checkLayerFiles(image);
  const manifestJson: JsonValue = [
    {
      Config: blobPath(image.configDescriptor.digest),
      RepoTags: (opts.names ?? []).map(dockerTag),
      Layers: image.layers.map((l) => blobPath(l.descriptor.digest)),
    },
  ];
  await writeTarFile(dest, async (w) => {
    await w.addBuffer('oci-layout', canonicalJsonBytes({ imageLayoutVersion: '1.0.0' }));
    await writeBlobs(w, image);
    await w.addBuffer('index.json', ociIndex(image, opts.names));
    // JSON.stringify, not canonical: docker's reader expects exactly these keys, order is irrelevant.
    await w.addBuffer('manifest.json', Buffer.from(JSON.stringify(manifestJson)));
  });
}

/** docker-archive RepoTags use the familiar short form (`app:1`, not `docker.io/library/app:1`). */
function dockerTag(name: string): string {
  let n = name;
  if (n.startsWith('docker.io/')) n = n.slice('docker.io/'.length);
  if (n.startsWith('library/')) n = n.slice('library/'.length);
  const slash = n.lastIndexOf('/');
  const colon = n.lastIndexOf(':');
  return colon > slash ? n : `${n}:latest`;
}
