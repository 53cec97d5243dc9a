// The seam between the API surface (this directory) and the build pipeline. The server turns Control and
// LLBBridge calls into BuildBackend calls: `solve` runs a frontend (dockerfile.v0, including its
// subrequests) and returns result refs plus metadata; `export` turns a returned result into outputs and
// answers the exporter response. Everything the backend needs from the client goes through the
// BuildSession it is handed; progress goes to the ProgressSink, which feeds Control.Status.
import type { ProgressSink } from './progress.js';

export type { ProgressSink, VertexHandle } from './progress.js';

export interface ExporterSpec {
  /** `image`, `local`, `tar`, `oci`, `docker`, ... */
  type: string;
  attrs: Record<string, string>;
  /** Index in the request's exporter list: the id FileSend uses to pick the client-side output. */
  index: number;
}

export interface CacheSpec {
  type: string;
  attrs: Record<string, string>;
}

export interface FrontendRequest {
  /** Always `dockerfile.v0` (the upstream Dockerfile frontend image via `gateway.v0` is mapped to it). */
  frontend: string;
  /** Frontend attributes: `filename`, `target`, `build-arg:*`, `platform`, `context:*`, `requestid`, ... */
  attrs: Record<string, string>;
  /** Subrequest name from attrs `requestid` (`frontend.outline`, `frontend.targets`, `frontend.lint`, ...). */
  requestId?: string;
  cacheImports: CacheSpec[];
  /** Names of LLB inputs the client passed; the server does not evaluate LLB. */
  inputNames: string[];
}

/** A frontend result: ids are opaque to the client and echoed back at export time. */
export interface FrontendResult {
  /** Single-platform result ref; `''` means an empty result (e.g. a subrequest answer). */
  ref?: string;
  /** Multi-platform results keyed by platform id (`linux/amd64`). */
  refs?: Record<string, string>;
  metadata: Record<string, Buffer>;
}

export interface FetchedToken {
  token: string;
  expiresInSeconds: number;
  issuedAtUnix: number;
}

/** The build client's side of a build, reached through the session tunnel. */
export interface BuildSession {
  readonly id: string;
  /** Whether the client offers a method (full path, e.g. `/moby.filesync.v1.FileSend/DiffCopy`). */
  offers(method: string): Promise<boolean>;
  /** Copies local directory `dirName` (`context`, `dockerfile`, named contexts) into `dest`. */
  syncDir(opts: {
    dirName: string;
    dest: string;
    includePatterns?: readonly string[];
    excludePatterns?: readonly string[];
    followPaths?: readonly string[];
    onProgress?: (bytes: number) => void;
  }): Promise<{ entries: number; files: number; bytes: number }>;
  /** A secret by id, or undefined when the client has none of that name. */
  getSecret(id: string, annotations?: Record<string, string>): Promise<Buffer | undefined>;
  /** Registry credentials for `host`; empty strings mean anonymous. */
  credentials(host: string): Promise<{ username: string; secret: string }>;
  /** Lets the client run the bearer-token exchange; undefined when it does not offer FetchToken. */
  fetchToken(req: { host: string; realm: string; service: string; scopes: string[] }): Promise<FetchedToken | undefined>;
  /** The client's token-signing public key for `host`, or undefined when it has none. */
  getTokenAuthority(host: string, salt: Buffer): Promise<Buffer | undefined>;
  /** Streams a tar/archive output (any byte stream, e.g. a Readable) to the client's exporter number `exporterIndex`. */
  sendFile(exporterIndex: number, data: AsyncIterable<Uint8Array>, exporterMetadata?: Record<string, string>): Promise<number>;
  /** Sends a directory output (`type=local`). */
  sendDir(exporterIndex: number, dir: string): Promise<{ files: number; bytes: number }>;
  /** SSH agent forwarding is not offered by this daemon: always throws a clear error. */
  forwardSsh(id?: string): Promise<never>;
}

export interface BuildContext {
  /** Control.Solve ref: the build id shared by Status and the gateway calls. */
  ref: string;
  session: BuildSession;
  progress: ProgressSink;
  /** Aborted when the client cancels (Ctrl-C, a killed client, a dropped connection). */
  signal: AbortSignal;
  entitlements: string[];
  /** Frontend attrs from Control.Solve itself (`attest:*`, `build-arg:SOURCE_DATE_EPOCH`, `no-cache`, ...). */
  solveAttrs: Record<string, string>;
  exporters: ExporterSpec[];
  cacheExports: CacheSpec[];
  cacheImports: CacheSpec[];
}

export interface FileEntryStat {
  path: string;
  /** Go os.FileMode bits (see file-mode.ts). */
  mode: number;
  uid: number;
  gid: number;
  size: bigint;
  modTimeNs: bigint;
  linkname: string;
}

export interface DiskUsageEntry {
  id: string;
  mutable: boolean;
  inUse: boolean;
  size: bigint;
  createdAt?: Date;
  lastUsedAt?: Date;
  usageCount: number;
  description: string;
  recordType: string;
  shared: boolean;
  parents: string[];
}

export interface BuildBackend {
  /** Runs a frontend request, returning result refs the server hands to the client. */
  solve(req: FrontendRequest, ctx: BuildContext): Promise<FrontendResult>;
  /** Exports a result the client returned; answers ExporterResponse keys. Not called without exporters. */
  export(result: FrontendResult, ctx: BuildContext): Promise<Record<string, string>>;
  /** Releases results of a finished build (whether or not they were exported). */
  release?(ref: string): Promise<void>;
  readFile?(resultRef: string, path: string, range: { offset: number; length: number } | undefined, ctx: BuildContext): Promise<Buffer>;
  readDir?(resultRef: string, path: string, includePattern: string, ctx: BuildContext): Promise<FileEntryStat[]>;
  statFile?(resultRef: string, path: string, ctx: BuildContext): Promise<FileEntryStat>;
  resolveImageConfig?(
    ref: string,
    opts: { platform?: { os: string; architecture: string; variant: string }; resolveMode: string },
    ctx: BuildContext,
  ): Promise<{ digest: string; config: Buffer; ref: string }>;
  diskUsage?(filters: string[]): Promise<DiskUsageEntry[]>;
  prune?(opts: { all: boolean; filters: string[]; keepDurationNs: bigint; reservedSpace: bigint }): AsyncIterable<DiskUsageEntry>;
}

/** An error a backend throws to choose the gRPC status code the client sees (default: Unknown). */
export class BuildFailure extends Error {
  constructor(
    message: string,
    readonly grpcCode: number = 2,
  ) {
    super(message);
    this.name = 'BuildFailure';
  }
}
