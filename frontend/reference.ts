// Image references as Docker normalises them: `alpine` -> `docker.io/library/alpine:latest`,
// `user/app:1` -> `docker.io/user/app:1`, `host:5000/app@sha256:...` kept as is.

const DIGEST_RE = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[0-9a-fA-F]{32,}$/;

export interface ParsedRef {
  domain: string;
  path: string;
  tag?: string;
  digest?: string;
}

export function parseImageRef(ref: string): ParsedRef {
  let rest = ref.trim();
  if (rest === '' || /\s/.test(rest)) {
    throw new Error(`invalid reference format: ${JSON.stringify(ref)}`);
  }
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST_RE.test(digest)) throw new Error(`invalid reference format: ${JSON.stringify(ref)}`);
  }
  let tag: string | undefined;
  const slash = rest.lastIndexOf('/');
  const colon = rest.lastIndexOf(':');
  if (colon > slash) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!/^[\w][\w.-]{0,127}$/.test(tag)) throw new Error(`invalid reference format: ${JSON.stringify(ref)}`);
  }
  let domain = 'docker.io';
  let path = rest;
  const i = rest.indexOf('/');
  if (i >= 0) {
    const first = rest.slice(0, i);
    if (first.includes('.') || first.includes(':') || first === 'localhost' || first !== first.toLowerCase()) {
      domain = first;
      path = rest.slice(i + 1);
    }
  }
  if (domain === 'index.docker.io') domain = 'docker.io';
  if (domain === 'docker.io' && !path.includes('/')) path = 'library/' + path;
  if (!/^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/.test(path)) {
    throw new Error(`invalid reference format: ${JSON.stringify(ref)}`);
  }
  return { domain, path, tag, digest };
}

/** Fully qualified name; `:latest` is added only when there is neither tag nor digest. */
export function normalizeImageRef(ref: string): string {
  const p = parseImageRef(ref);
  let s = `${p.domain}/${p.path}`;
  if (p.tag) s += `:${p.tag}`;
  else if (!p.digest) s += ':latest';
  if (p.digest) s += `@${p.digest}`;
  return s;
}
