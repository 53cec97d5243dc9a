// Image references: `[host[:port]/]repo[:tag][@digest]`, with Docker Hub defaults (a bare name is
// `docker.io/library/NAME`, `docker.io` is served by `registry-1.docker.io`). Everything else in the
// registry client addresses images through an ImageReference.
import { ObdkitError } from '../util/errors.js';
import { isDigest } from '../oci/digest.js';

export const DOCKER_HUB = 'docker.io';
export const DOCKER_HUB_API_HOST = 'registry-1.docker.io';

export interface ImageReference {
  /** Registry name as written (`docker.io`, `127.0.0.1:5000`, `ghcr.io`). */
  readonly registry: string;
  /** Host[:port] the HTTP API is served from (`registry-1.docker.io` for Docker Hub). */
  readonly host: string;
  readonly repository: string;
  readonly tag?: string;
  readonly digest?: string;
}

const componentRe = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const tagRe = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
const hostRe = /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$/;

function bad(input: string, why: string): never {
  throw new ObdkitError('EREFERENCE', `invalid image reference: ${why}`, { ref: input });
}

export function parseReference(input: string): ImageReference {
  const s = input.trim();
  if (s === '') bad(input, 'empty reference');
  if (/^[a-z]+:\/\//i.test(s)) bad(input, 'a reference has no scheme (write HOST/REPO:TAG, not a URL)');

  let rest = s;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!isDigest(digest)) bad(input, `digest ${JSON.stringify(digest)} is not sha256:<64 hex> or sha512:<128 hex>`);
  }

  let tag: string | undefined;
  const lastSlash = rest.lastIndexOf('/');
  const colon = rest.lastIndexOf(':');
  if (colon > lastSlash) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!tagRe.test(tag)) bad(input, `tag ${JSON.stringify(tag)} must match [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`);
  }

  let registry = DOCKER_HUB;
  let path = rest;
  const slash = rest.indexOf('/');
  if (slash >= 0) {
    const first = rest.slice(0, slash);
    if (first.includes('.') || first.includes(':') || first === 'localhost' || first.startsWith('[')) {
      registry = first;
      path = rest.slice(slash + 1);
      if (!hostRe.test(registry)) bad(input, `registry host ${JSON.stringify(registry)} is not a valid host[:port]`);
    }
  }
  if (registry === 'index.docker.io') registry = DOCKER_HUB;
  if (path === '') bad(input, 'missing repository name');
  if (registry === DOCKER_HUB && !path.includes('/')) path = `library/${path}`;
  for (const c of path.split('/')) {
    if (!componentRe.test(c)) {
      bad(input, `repository component ${JSON.stringify(c)} must be lowercase letters, digits and single separators (. _ __ -)`);
    }
  }
  if (path.length > 255) bad(input, 'repository name longer than 255 characters');
  if (tag === undefined && digest === undefined) tag = 'latest';

  const ref: { -readonly [K in keyof ImageReference]: ImageReference[K] } = {
    registry,
    host: registry === DOCKER_HUB ? DOCKER_HUB_API_HOST : registry,
    repository: path,
  };
  if (tag !== undefined) ref.tag = tag;
  if (digest !== undefined) ref.digest = digest;
  return ref;
}

export function formatReference(ref: ImageReference): string {
  let s = `${ref.registry}/${ref.repository}`;
  if (ref.tag !== undefined) s += `:${ref.tag}`;
  if (ref.digest !== undefined) s += `@${ref.digest}`;
  return s;
}

/** What to put after /manifests/: the digest if pinned, else the tag. */
export function manifestKey(ref: ImageReference): string {
  return ref.digest ?? ref.tag ?? 'latest';
}

export function withDigest(ref: ImageReference, digest: string): ImageReference {
  const { tag: _tag, ...rest } = ref;
  return { ...rest, digest };
}

export function withTag(ref: ImageReference, tag: string): ImageReference {
  const { digest: _digest, ...rest } = ref;
  return { ...rest, tag };
}

/** True for hosts Docker talks plain http to by default: localhost, 127.0.0.0/8, [::1]. */
export function isLoopbackHost(host: string): boolean {
  let h = host;
  if (h.startsWith('[')) h = h.slice(1, h.indexOf(']'));
  else if (h.includes(':')) h = h.slice(0, h.lastIndexOf(':'));
  if (h === 'localhost' || h === '::1') return true;
  const m = /^127\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(h);
  return m !== null && m.slice(1).every((x) => Number(x) <= 255);
}
