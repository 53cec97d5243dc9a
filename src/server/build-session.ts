// The BuildSession a backend receives: the client's session services (FileSync, Secrets, Auth, FileSend)
// behind plain async methods. The session stream may open after the build starts, so every method first
// waits for the session to register (or the build to be cancelled).
import { status as GrpcStatus } from '@grpc/grpc-js';
import { ObdkitError } from '../util/errors.js';
import type { BuildSession, FetchedToken } from './backend.js';
import { receiveDir } from './filesync-receive.js';
import { sendDir, sendFile } from './filesend.js';
import { GetSecretRequest, GetSecretResponse } from './gen/session/secrets.js';
import {
  CredentialsRequest,
  CredentialsResponse,
  FetchTokenRequest,
  FetchTokenResponse,
  GetTokenAuthorityRequest,
  GetTokenAuthorityResponse,
} from './gen/session/auth.js';
import { SessionCallError, type SessionClient } from './session-client.js';
import type { SessionRegistry } from './sessions.js';

const SECRETS_GET = '/moby.buildkit.secrets.v1.Secrets/GetSecret';
const AUTH_CREDENTIALS = '/moby.filesync.v1.Auth/Credentials';
const AUTH_FETCH_TOKEN = '/moby.filesync.v1.Auth/FetchToken';
const AUTH_TOKEN_AUTHORITY = '/moby.filesync.v1.Auth/GetTokenAuthority';
/** The client identifies itself this way to registries' token endpoints, as BuildKit does. */
const TOKEN_CLIENT_ID = 'buildkit-client';
/** Auth calls should not hang a build on an unresponsive client. */
const AUTH_TIMEOUT_MS = 60_000;

function isAbsent(err: unknown): boolean {
  return err instanceof SessionCallError && (err.grpcCode === GrpcStatus.NOT_FOUND || err.grpcCode === GrpcStatus.UNIMPLEMENTED);
}

export class RemoteBuildSession implements BuildSession {
  constructor(
    readonly id: string,
    private readonly registry: SessionRegistry,
    private readonly signal: AbortSignal,
  ) {}

  private async client(): Promise<SessionClient> {
    if (this.id === '') throw new ObdkitError('ENOSESSION', 'the build request named no session');
    const s = await this.registry.wait(this.id, this.signal);
    if (s.isClosed) throw new ObdkitError('ENOSESSION', `session ${this.id} has already closed`, { ref: this.id });
    return s;
  }

  async offers(method: string): Promise<boolean> {
    return (await this.client()).has(method);
  }

  async syncDir(opts: Parameters<BuildSession['syncDir']>[0]) {
    return receiveDir(await this.client(), { ...opts, signal: this.signal });
  }

  async getSecret(id: string, annotations: Record<string, string> = {}): Promise<Buffer | undefined> {
    const s = await this.client();
    if (!s.has(SECRETS_GET)) return undefined;
    try {
      const res = await s.unary(SECRETS_GET, GetSecretRequest, GetSecretResponse, { ID: id, annotations }, { signal: this.signal });
      return Buffer.from(res.data);
    } catch (err) {
      if (isAbsent(err)) return undefined;
      throw err;
    }
  }

  async credentials(host: string): Promise<{ username: string; secret: string }> {
    const s = await this.client();
    if (!s.has(AUTH_CREDENTIALS)) return { username: '', secret: '' };
    const res = await s.unary(AUTH_CREDENTIALS, CredentialsRequest, CredentialsResponse, { Host: host }, { signal: this.authSignal() });
    return { username: res.Username, secret: res.Secret };
  }

  async fetchToken(req: { host: string; realm: string; service: string; scopes: string[] }): Promise<FetchedToken | undefined> {
    const s = await this.client();
    if (!s.has(AUTH_FETCH_TOKEN)) return undefined;
    try {
      const res = await s.unary(
        AUTH_FETCH_TOKEN,
        FetchTokenRequest,
        FetchTokenResponse,
        { ClientID: TOKEN_CLIENT_ID, Host: req.host, Realm: req.realm, Service: req.service, Scopes: req.scopes },
        { signal: this.authSignal() },
      );
      return { token: res.Token, expiresInSeconds: Number(res.ExpiresIn), issuedAtUnix: Number(res.IssuedAt) };
    } catch (err) {
      if (err instanceof SessionCallError && err.grpcCode === GrpcStatus.UNIMPLEMENTED) return undefined;
      throw err;
    }
  }

  async getTokenAuthority(host: string, salt: Buffer): Promise<Buffer | undefined> {
    const s = await this.client();
    if (!s.has(AUTH_TOKEN_AUTHORITY)) return undefined;
    try {
      const res = await s.unary(AUTH_TOKEN_AUTHORITY, GetTokenAuthorityRequest, GetTokenAuthorityResponse, { Host: host, Salt: salt }, {
        signal: this.authSignal(),
      });
      return res.PublicKey.length ? Buffer.from(res.PublicKey) : undefined;
    } catch (err) {
      if (err instanceof SessionCallError && (err.grpcCode === GrpcStatus.UNIMPLEMENTED || err.grpcCode === GrpcStatus.UNAVAILABLE)) {
        return undefined;
      }
      throw err;
    }
  }

  async sendFile(exporterIndex: number, data: AsyncIterable<Uint8Array>, exporterMetadata: Record<string, string> = {}) {
    return sendFile(await this.client(), exporterIndex, data, { exporterMetadata, signal: this.signal });
  }

  async sendDir(exporterIndex: number, dir: string) {
    return sendDir(await this.client(), exporterIndex, dir, { signal: this.signal });
  }

  async forwardSsh(id = 'default'): Promise<never> {
    throw new ObdkitError(
      'EUNSUPPORTED',
      `SSH agent forwarding (ssh id "${id}", RUN --mount=type=ssh or --ssh) is not supported by obdkit; pass credentials as a secret instead`,
      { ref: this.id },
    );
  }

  private authSignal(): AbortSignal {
    return AbortSignal.any([this.signal, AbortSignal.timeout(AUTH_TIMEOUT_MS)]);
  }
}
