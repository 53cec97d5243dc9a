// Loop devices over the FUSE image file. Always `losetup -f` (nodes are created on demand), always
// direct I/O (no second page cache, and it is what makes FUSE_ASYNC_DIO pay off), and detach is
// asynchronous in the kernel: detachLoop() polls until the device has really let go of the file.
import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { execa } from 'execa';
import { ObdkitError } from '../../src/util/errors.js';

export async function attachLoop(file: string, opts: { readOnly?: boolean } = {}): Promise<string> {
  const args = ['-f', '--show', '--direct-io=on'];
  if (opts.readOnly) args.push('-r');
  const r = await execa('losetup', [...args, file], { reject: false });
  if (r.exitCode !== 0) throw new ObdkitError('ELOOP', `losetup failed: ${r.stderr.trim()}`, { file });
  return r.stdout.trim();
}

/** Backing file of a loop device, or null once it is detached. */
export async function loopBackingFile(device: string): Promise<string | null> {
  try {
    return (await readFile(`/sys/block/${basename(device)}/loop/backing_file`, 'utf8')).trim();
  } catch {
    return null;
  }
}

export async function detachLoop(device: string, timeoutMs = 20_000): Promise<void> {
  const r = await execa('losetup', ['-d', device], { reject: false });
  if (r.exitCode !== 0 && (await loopBackingFile(device)) !== null) {
    throw new ObdkitError('ELOOP', `losetup -d failed: ${r.stderr.trim()}`, { file: device });
  }
  const deadline = Date.now() + timeoutMs;
  while ((await loopBackingFile(device)) !== null) {
    if (Date.now() > deadline) throw new ObdkitError('ELOOP', `loop device still attached after ${timeoutMs} ms`, { file: device });
    await new Promise((res) => setTimeout(res, 20));
  }
}

export interface LoopEntry {
  device: string;
  backingFile: string;
}

/** All attached loop devices (what `losetup -a` shows). */
export async function listLoops(): Promise<LoopEntry[]> {
  const r = await execa('losetup', ['-J', '-l', '-O', 'NAME,BACK-FILE'], { reject: false });
  if (r.exitCode !== 0 || r.stdout.trim() === '') return [];
  const parsed = JSON.parse(r.stdout) as { loopdevices?: Array<{ name: string; 'back-file': string | null }> };
  return (parsed.loopdevices ?? []).map((l) => ({ device: l.name, backingFile: (l['back-file'] ?? '').replace(/ \(deleted\)$/, '') }));
}
