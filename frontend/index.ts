// The Dockerfile frontend: Dockerfile text in, build graph (src/solver/ops.ts) and image config out; plus
// the `.dockerignore` reader/matcher and the targets/outline subrequests. Pure: the caller injects base
// image lookups and runs the graph.
export { convertDockerfile, DEFAULT_PATH } from './convert.js';
export type { ConvertOptions, ConvertResult, ResolveImageConfig, ResolvedImage, StageSummary } from './convert.js';
export { parseDockerignore, PatternMatcher, cleanPath } from './dockerignore.js';
export { listTargets, outline, targetsResult, outlineResult, describeResult, runSubrequest, SUBREQUESTS, SUBREQUEST_VERSION } from './subrequests.js';
export { lint, lintResult } from './lint.js';
export type { LintResult, LintOptions } from './lint.js';
export type { LintWarning, RuleName } from './lint-rules.js';
export type { Outline, TargetList, Target, OutlineArg, OutlineSecret, SubrequestResult } from './subrequests.js';
export { parsePlatform, formatPlatform, hostPlatform } from './platform.js';
export { normalizeImageRef } from './reference.js';
