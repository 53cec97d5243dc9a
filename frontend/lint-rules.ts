// Dockerfile check rules (the `frontend.lint` subrequest, `docker buildx build --check`): names,
// descriptions and URLs as BuildKit publishes them, and the collector the translation reports into.
// Syntactic rules are checked in `lint.ts`; rules that need the build environment (undefined variables,
// relative WORKDIR, repeated CMD, ...) are reported by `convert.ts` and `config-instructions.ts` while
// they translate, through an optional LintSink, so both passes share one set of semantics.
import type { Instruction } from './instructions.js';

const BASE_URL = 'https://docs.docker.com/go/dockerfile/rule/';

export const RULES = {
  StageNameCasing: { description: 'Stage names should be lowercase', slug: 'stage-name-casing' },
  FromAsCasing: { description: "The 'as' keyword should match the case of the 'from' keyword", slug: 'from-as-casing' },
  NoEmptyContinuation: { description: 'Empty continuation lines will become errors in a future release', slug: 'no-empty-continuation' },
  ConsistentInstructionCasing: {
    description: 'All commands within the Dockerfile should use the same casing (either upper or lower)',
    slug: 'consistent-instruction-casing',
  },
  DuplicateStageName: { description: 'Stage names should be unique', slug: 'duplicate-stage-name' },
  ReservedStageName: { description: 'Reserved words should not be used as stage names', slug: 'reserved-stage-name' },
  JSONArgsRecommended: {
    description: 'JSON arguments recommended for ENTRYPOINT/CMD to prevent unintended behavior related to OS signals',
    slug: 'json-args-recommended',
  },
  MaintainerDeprecated: {
    description: 'The MAINTAINER instruction is deprecated, use a label instead to define an image author',
    slug: 'maintainer-deprecated',
  },
  UndefinedArgInFrom: { description: 'FROM command must use declared ARGs', slug: 'undefined-arg-in-from' },
  WorkdirRelativePath: {
    description: 'Relative workdir without an absolute workdir declared within the build can have unexpected results if the base image changes',
    slug: 'workdir-relative-path',
  },
  UndefinedVar: { description: 'Variables should be defined before their use', slug: 'undefined-var' },
  MultipleInstructionsDisallowed: {
    description: 'Multiple instructions of the same type should not be used in the same stage',
    slug: 'multiple-instructions-disallowed',
  },
  LegacyKeyValueFormat: { description: 'Legacy key/value format with whitespace separator should not be used', slug: 'legacy-key-value-format' },
  RedundantTargetPlatform: {
    description: 'Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior',
    slug: 'redundant-target-platform',
  },
  SecretsUsedInArgOrEnv: { description: 'Sensitive data should not be used in the ARG or ENV commands', slug: 'secrets-used-in-arg-or-env' },
  InvalidDefaultArgInFrom: {
    description: 'Default value for global ARG results in an empty or invalid base image name',
    slug: 'invalid-default-arg-in-from',
  },
  ExposeProtoCasing: { description: 'Protocol in EXPOSE instruction should be lowercase', slug: 'expose-proto-casing' },
  ExposeInvalidFormat: {
    description: 'IP address and host-port mapping should not be used in EXPOSE instruction. This will become an error in a future release',
    slug: 'expose-invalid-format',
  },
} as const;

export type RuleName = keyof typeof RULES;

/** pb.Location as JSON (zero fields omitted). */
export interface LintLocation {
  sourceIndex?: number;
  ranges: { start: { line: number }; end: { line: number } }[];
}

export interface LintWarning {
  ruleName: RuleName;
  description: string;
  url: string;
  detail: string;
  location: LintLocation;
}

export interface LintSink {
  report(rule: RuleName, detail: string, line: number, endLine?: number): void;
}

export class LintCollector implements LintSink {
  readonly warnings: LintWarning[] = [];

  report(rule: RuleName, detail: string, line: number, endLine = line): void {
    const r = RULES[rule];
    this.warnings.push({
      ruleName: rule,
      description: r.description,
      url: BASE_URL + r.slug + '/',
      detail,
      location: { ranges: [{ start: { line }, end: { line: endLine } }] },
    });
  }
}

/** Reports at an instruction's lines. */
export function reportAt(sink: LintSink | undefined, rule: RuleName, detail: string, ins: Instruction): void {
  sink?.report(rule, detail, ins.line, ins.endLine);
}

const SECRET_RE = /(?:_|^)(?:apikey|auth|credential|credentials|key|password|pword|passwd|secret|token)(?:_|$)/i;
const SECRET_ALLOW_RE = /(?:_|^)(?:public|file|version)(?:_|$)/i;

/** ARG/ENV names that look like they hold credentials. */
export function looksSecret(key: string): boolean {
  return SECRET_RE.test(key) && !SECRET_ALLOW_RE.test(key);
}
