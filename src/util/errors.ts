// One error type for the whole project. `code` is stable and machine-readable; `context` carries
// the facts a user needs to act on (file and byte offset, image reference, build step, ...).

export type ErrorContext = {
  file?: string;
  offset?: number;
  field?: string;
  line?: number;
  ref?: string;
  step?: string;
  [key: string]: string | number | boolean | undefined;
};

export class ObdkitError extends Error {
  readonly code: string;
  readonly context: ErrorContext;

  constructor(code: string, message: string, context: ErrorContext = {}, options?: { cause?: unknown }) {
    super(formatMessage(message, context), options);
    this.name = 'ObdkitError';
    this.code = code;
    this.context = context;
  }
}

/** Errors in a byte format: always name the file (or blob) and the byte offset of the fault. */
export class FormatError extends ObdkitError {
  constructor(message: string, context: ErrorContext & { file: string; offset: number }) {
    super('EFORMAT', message, context);
    this.name = 'FormatError';
  }
}

function formatMessage(message: string, ctx: ErrorContext): string {
  const where: string[] = [];
  if (ctx.file !== undefined) {
    let loc = ctx.file;
    if (ctx.line !== undefined) loc += `:${ctx.line}`;
    where.push(loc);
  }
  if (ctx.offset !== undefined) where.push(`byte offset ${ctx.offset}`);
  if (ctx.field !== undefined) where.push(`field ${ctx.field}`);
  if (ctx.ref !== undefined) where.push(ctx.ref);
  if (ctx.step !== undefined) where.push(`step ${ctx.step}`);
  return where.length ? `${where.join(', ')}: ${message}` : message;
}

export function errnoCode(err: unknown): string | undefined {
  if (err && typeof err === 'object' && 'code' in err && typeof (err as { code: unknown }).code === 'string') {
    return (err as { code: string }).code;
  }
  return undefined;
}
