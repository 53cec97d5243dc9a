// The session client's own logic against scripted peers (node:http2 servers standing in for the build
// client's side of the tunnel): the FileSync receiver on cases real clients never produce (a hostile path
// through a symlink, a hardlink to nothing, an error packet, interleaved DATA/STAT), and health checking.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { lstat, mkdir, mkdtemp, readFile, readlink, rm } from 'node:fs/promises';
import http2 from 'node:http2';
import { connect, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { log } from '../../src/util/log.js';
import { frameMessage, FrameDecoder } from '../../src/server/grpc-frames.js';
import { Packet, Packet_PacketType as T } from '../../src/server/gen/fsutil/wire.js';
import type { Stat } from '../../src/server/gen/fsutil/stat.js';
import { FILESYNC_DIFFCOPY, receiveDir } from '../../src/server/filesync-receive.js';
import { SessionClient } from '../../src/server/session-client.js';
import { HEALTH_CHECK, monitorSession } from '../../src/server/session-health.js';
import { GO_MODE_DIR, GO_MODE_SYMLINK } from '../../src/server/file-mode.js';

log.level = 'warn';

let tmp: string;
before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'obdkit-filesync-'));
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

function stat(path: string, mode: number, extra: Partial<Stat> = {}): Stat {
  return { path, mode: mode >>> 0, uid: 0, gid: 0, size: 0n, modTime: 1_600_000_000_000_000_000n, linkname: '', devmajor: 0n, devminor: 0n, xattrs: {}, ...extra };
}

type Script = (send: (p: Partial<Packet>) => void, requests: AsyncIterable<Packet>) => Promise<void>;

/** Runs `script` as the sender side of one DiffCopy call and returns the receiver's outcome. */
async function withSender<T>(script: Script, fn: (client: SessionClient) => Promise<T>): Promise<T> {
  const server = http2.createServer();
  server.on('stream', (stream, headers) => {
    assert.equal(headers[':path'], FILESYNC_DIFFCOPY);
    assert.equal(headers['dir-name'], 'context');
    stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
    const decoder = new FrameDecoder('test');
    async function* requests(): AsyncGenerator<Packet> {
      for await (const chunk of stream as AsyncIterable<Buffer>) for (const m of decoder.push(chunk)) yield Packet.decode(m);
    }
    const send = (p: Partial<Packet>) => stream.write(frameMessage(Packet.encode(Packet.fromPartial(p)).finish()));
    let status = { code: '0', message: '' };
    stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': status.code, 'grpc-message': status.message }));
    script(send, requests()).then(
      () => stream.end(),
      (err: Error) => {
        status = { code: '2', message: encodeURIComponent(err.message) };
        stream.end();
      },
    );
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const socket = connect((server.address() as AddressInfo).port, '127.0.0.1');
  const client = new SessionClient('sess', '', [FILESYNC_DIFFCOPY], socket);
  try {
    return await fn(client);
  } finally {
    client.destroy();
    socket.destroy();
    await new Promise((resolve) => server.close(resolve));
  }
}

describe('FileSync receiver', () => {
  test('interleaved DATA and STAT, hardlinks after their target, FIN handshake', async () => {
    const dest = join(tmp, 'ok');
    const stats = await withSender(
      async (send, requests) => {
        send({ type: T.PACKET_STAT, stat: stat('a', GO_MODE_DIR | 0o750) });
        send({ type: T.PACKET_STAT, stat: stat('a/big', 0o644, { size: 6n }) });
        const it = requests[Symbol.asyncIterator]();
        const req = await it.next();
        assert.equal(req.value?.type, T.PACKET_REQ);
        assert.equal(req.value?.ID, 1);
        send({ type: T.PACKET_DATA, ID: 1, data: Buffer.from('abc') });
        send({ type: T.PACKET_STAT, stat: stat('a/hard', 0o644, { linkname: 'a/big' }) });
        send({ type: T.PACKET_STAT, stat: stat('a/link', GO_MODE_SYMLINK | 0o777, { linkname: 'big' }) });
        send({ type: T.PACKET_DATA, ID: 1, data: Buffer.from('def') });
        send({ type: T.PACKET_DATA, ID: 1, data: Buffer.alloc(0) });
        send({ type: T.PACKET_STAT });
        const fin = await it.next();
        assert.equal(fin.value?.type, T.PACKET_FIN);
        send({ type: T.PACKET_FIN });
      },
      (client) => receiveDir(client, { dirName: 'context', dest }),
    );
    assert.deepEqual(stats, { entries: 4, files: 1, bytes: 6 });
    assert.equal(await readFile(join(dest, 'a/big'), 'utf8'), 'abcdef');
    assert.equal(await readFile(join(dest, 'a/hard'), 'utf8'), 'abcdef');
    assert.equal((await lstat(join(dest, 'a/hard'))).ino, (await lstat(join(dest, 'a/big'))).ino);
    assert.equal(await readlink(join(dest, 'a/link')), 'big');
    assert.equal((await lstat(join(dest, 'a'))).mode & 0o777, 0o750);
    assert.equal((await lstat(join(dest, 'a/big'))).mtimeMs, 1_600_000_000_000);
  });

  test('an entry below a symlink is refused, nothing is written through it', async () => {
    const outside = join(tmp, 'outside');
    await mkdir(outside, { recursive: true });
    await assert.rejects(
      withSender(
        async (send) => {
          send({ type: T.PACKET_STAT, stat: stat('evil', GO_MODE_SYMLINK | 0o777, { linkname: outside }) });
          send({ type: T.PACKET_STAT, stat: stat('evil/pwned', 0o644) });
          send({ type: T.PACKET_STAT });
          await new Promise((r) => setTimeout(r, 50));
        },
        (client) => receiveDir(client, { dirName: 'context', dest: join(tmp, 'evil-dest') }),
      ),
      /evil\/pwned does not follow its parent directory/,
    );
    assert.equal(existsSync(join(outside, 'pwned')), false);
  });

  test('escaping paths and dangling hardlinks are refused', async () => {
    for (const bad of [stat('../up', 0o644), stat('/abs', 0o644), stat('x', 0o644, { linkname: 'nothing' })]) {
      await assert.rejects(
        withSender(
          async (send) => {
            send({ type: T.PACKET_STAT, stat: bad });
            await new Promise((r) => setTimeout(r, 50));
          },
          (client) => receiveDir(client, { dirName: 'context', dest: join(tmp, 'bad-dest') }),
        ),
        /invalid path|not an earlier regular file/,
      );
    }
  });

  test("the sender's ERR packet becomes the error", async () => {
    await assert.rejects(
      withSender(
        async (send) => {
          send({ type: T.PACKET_ERR, data: Buffer.from('permission denied: secret.pem') });
          await new Promise((r) => setTimeout(r, 50));
        },
        (client) => receiveDir(client, { dirName: 'context', dest: join(tmp, 'err-dest') }),
      ),
      /client failed to send context: permission denied: secret\.pem/,
    );
  });
});

describe('session health', () => {
  test('a client that keeps failing health checks loses its session; a healthy one keeps it', async () => {
    for (const healthy of [false, true]) {
      let checks = 0;
      const server = http2.createServer();
      server.on('stream', (stream, headers) => {
        assert.equal(headers[':path'], HEALTH_CHECK);
        checks++;
        stream.on('data', () => undefined);
        stream.on('end', () => {
          if (healthy) {
            stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
            stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
            stream.end(frameMessage(Buffer.from([8, 1])));
          } else {
            stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '14', 'grpc-message': 'not serving' }, { endStream: true });
          }
        });
      });
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      const socket = connect((server.address() as AddressInfo).port, '127.0.0.1');
      const client = new SessionClient('h', '', [HEALTH_CHECK], socket);
      try {
        monitorSession(client, { intervalMs: 20, minTimeoutMs: 2000 });
        if (healthy) {
          while (checks < 4) await new Promise((r) => setTimeout(r, 20));
          assert.equal(client.isClosed, false);
        } else {
          await client.closed;
          assert.equal(checks, 2);
        }
      } finally {
        client.destroy();
        socket.destroy();
        await new Promise((resolve) => server.close(resolve));
      }
    }
  });
});
