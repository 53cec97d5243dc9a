// A tar file written entry by entry with tar-stream: small documents from buffers, blobs streamed
// from disk with backpressure (never whole in memory) and checked against their digest on the way.
// Entries get fixed metadata (mtime 0, root, 0644) so the same image gives the same archive bytes.
// Output goes to a temp name beside the destination and is renamed into place only when complete.
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, type WriteStream } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { once } from 'node:events';
import tar, { type Header, type Pack } from 'tar-stream';

/** What an entry needs: a name; everything else has a default. */
export type EntryHeader = Partial<Header> & Pick<Header, 'name'>;
import { ObdkitError } from '../util/errors.js';

export class TarFileWriter {
  private readonly pack: Pack;
  private readonly out: WriteStream;
  private readonly done: Promise<void>;
  private readonly tmp: string;

  private constructor(private readonly dest: string) {
    this.tmp = `${dest}.tmp-${process.pid}-${Date.now()}`;
    this.pack = tar.pack();
    this.out = createWriteStream(this.tmp, { mode: 0o644 });
    this.done = new Promise<void>((resolve, reject) => {
      this.out.once('finish', () => resolve());
      this.out.once('error', reject);
      this.pack.once('error', reject);
    });
    // Avoid an unhandled rejection if abort() runs before anyone awaits `done`.
    this.done.catch(() => {});
    this.pack.pipe(this.out);
  }

  static create(dest: string): TarFileWriter {
    return new TarFileWriter(dest);
  }

  async addBuffer(name: string, data: Buffer): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.pack.entry(header(name, data.length), data, (err) => (err ? reject(err) : resolve()));
    });
  }

  async addDirectory(name: string): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.pack.entry({ ...header(name, 0), type: 'directory', mode: 0o755 }, (err) => (err ? reject(err) : resolve()));
    });
  }

  /** An entry without a body: directory, symlink, hardlink, device, fifo. */
  async addEntry(h: EntryHeader): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.pack.entry({ ...h, uname: h.uname ?? '', gname: h.gname ?? '', size: 0 }, (err) => (err ? reject(err) : resolve()));
    });
  }

  /** Streams a file into the archive; throws if its size or sha256 differ from what is expected. */
  async addFile(name: string, path: string, size: number, digest?: string): Promise<void> {
    await this.addStream(header(name, size), createReadStream(path, { highWaterMark: 1 << 20 }), digest, path);
  }

  /** Streams `body` as the content of an entry of `h.size` bytes, with backpressure. */
  async addStream(h: EntryHeader, body: AsyncIterable<unknown>, digest?: string, label = h.name): Promise<void> {
    const size = h.size ?? 0;
    const hash = digest !== undefined ? createHash('sha256') : undefined;
    let entryDone!: Promise<void>;
    const sink = await new Promise<ReturnType<Pack['entry']>>((resolveSink) => {
      entryDone = new Promise<void>((resolve, reject) => {
        resolveSink(this.pack.entry({ ...h, uname: h.uname ?? '', gname: h.gname ?? '', size }, (err) => (err ? reject(err) : resolve())));
      });
    });
    // On a mismatch below the entry is destroyed and this promise rejects; the thrown error says why.
    entryDone.catch(() => {});
    let written = 0;
    for await (const chunk of body) {
      const buf = chunk as Buffer;
      hash?.update(buf);
      written += buf.length;
      if (written > size) break;
      if (!sink.write(buf)) await once(sink, 'drain');
    }
    if (written !== size) {
      sink.destroy();
      throw new ObdkitError('EEXPORT', `content changed size while exporting: expected ${size} bytes`, { file: label });
    }
    if (hash !== undefined && `sha256:${hash.digest('hex')}` !== digest) {
      sink.destroy();
      throw new ObdkitError('EEXPORT', `blob content does not match ${digest}`, { file: label, ref: digest });
    }
    (sink as unknown as { end(): void }).end();
    await entryDone;
  }

  /** Finishes the archive and moves it to its destination. */
  async finish(): Promise<void> {
    this.pack.finalize();
    await this.done;
    await rename(this.tmp, this.dest);
  }

  /** Drops a partial archive. */
  async abort(): Promise<void> {
    this.pack.destroy();
    this.out.destroy();
    await rm(this.tmp, { force: true });
  }
}

function header(name: string, size: number): { name: string; size: number; mode: number; mtime: Date; uid: number; gid: number; uname: string; gname: string } {
  return { name, size, mode: 0o644, mtime: new Date(0), uid: 0, gid: 0, uname: '', gname: '' };
}

/** Runs `fill` against a new archive at `dest`; on error the partial file is removed. */
export async function writeTarFile(dest: string, fill: (w: TarFileWriter) => Promise<void>): Promise<void> {
  const w = TarFileWriter.create(dest);
  try {
    await fill(w);
    await w.finish();
  } catch (err) {
    await w.abort();
    throw err;
  }
}
