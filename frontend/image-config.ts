// Image config helpers: the config a stage starts from (scratch or a resolved base image), and environment
// list updates with Docker's ordering. `config-instructions.ts` changes configs; `convert.ts` owns them.
import type { ImageConfig, ImageRuntimeConfig, Platform } from '../src/solver/ops.js';

/** The PATH BuildKit gives images that set none. */
export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
export const DEFAULT_SHELL = ['/bin/sh', '-c'];

/** What a registry says about a base image: its config, and the digest it resolved to (pins the source). */
export interface ResolvedImage {
  digest?: string;
  config: {
    os?: string;
    architecture?: string;
    variant?: string;
    author?: string;
    config?: ImageRuntimeConfig;
    history?: { created_by?: string; comment?: string; empty_layer?: boolean }[];
  };
}

export type ResolveImageConfig = (ref: string, platform: Platform) => Promise<ResolvedImage>;

export function emptyImage(p: Platform): ImageConfig {
  const img: ImageConfig = { os: p.os, architecture: p.architecture, config: { Env: [`PATH=${DEFAULT_PATH}`] }, history: [] };
  if (p.variant) img.variant = p.variant;
  return img;
}

export function imageFromResolved(r: ResolvedImage, p: Platform): ImageConfig {
  const c = r.config;
  const img: ImageConfig = {
    os: c.os ?? p.os,
    architecture: c.architecture ?? p.architecture,
    config: structuredClone(c.config ?? {}),
    history: (c.history ?? []).map((h) => ({ created_by: h.created_by ?? '', ...(h.comment ? { comment: h.comment } : {}), ...(h.empty_layer ? { empty_layer: true } : {}) })),
  };
  const variant = c.variant ?? p.variant;
  if (variant) img.variant = variant;
  if (c.author) img.author = c.author;
  if (!img.config.Env || !img.config.Env.some((e) => e.startsWith('PATH='))) {
    img.config.Env = [...(img.config.Env ?? []), `PATH=${DEFAULT_PATH}`];
  }
  return img;
}

export function setEnv(list: string[], key: string, value: string): string[] {
  const entry = `${key}=${value}`;
  const i = list.findIndex((e) => e === key || e.startsWith(key + '='));
  // A redefined variable keeps its position, as Docker's config does.
  if (i < 0) return [...list, entry];
  const copy = [...list];
  copy[i] = entry;
  return copy;
}
