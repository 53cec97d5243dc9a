// Capabilities advertised by LLBBridge.Ping. They steer client behaviour: `return` makes clients finish
// forwarded builds with LLBBridge.Return; not listing `exporter.image.attestations` keeps buildx from
// adding a provenance attestation to every build; `exporter.multiple` allows several outputs. The LLB list
// is non-empty on purpose (an empty one means "legacy defaults" to clients) and leaves out `constraints`
// and `platform`, so a client refuses to send raw LLB, which this daemon does not evaluate.
import type { APICap } from './gen/buildkit/caps.js';

const FRONTEND_CAPS = [
  'solve.base',
  'return',
  'returnmap',
  'proto.refarray',
  'readfile',
  'frontend.inputs',
  'importcaches',
  'frontend.caps',
  'gateway.warnings',
];

const OPTIONAL_FRONTEND_CAPS: Record<string, string> = {
  readDir: 'readdir',
  statFile: 'statfile',
  resolveImageConfig: 'resolveimage',
};

const LLB_CAPS = [
  'exporter.multiple',
  'exporter.image.annotations',
  'exporter.sourcedateepoch',
  'meta.description',
  'source.image',
  'source.local',
  'source.local.unique',
  'source.local.sessionid',
  'source.local.includepatterns',
  'source.local.excludepatterns',
  'source.local.followpaths',
  'source.local.differ',
];

function cap(id: string): APICap {
  return { ID: id, Enabled: true, Deprecated: false, DisabledReason: '', DisabledReasonMsg: '', DisabledAlternative: '' };
}

/** Frontend caps, with the optional file-access ones only when the backend implements them. */
export function frontendCaps(implemented: Iterable<string>): APICap[] {
  const have = new Set(implemented);
  const ids = [...FRONTEND_CAPS];
  for (const [method, id] of Object.entries(OPTIONAL_FRONTEND_CAPS)) if (have.has(method)) ids.push(id);
  return ids.map(cap);
}

export function llbCaps(): APICap[] {
  return LLB_CAPS.map(cap);
}
