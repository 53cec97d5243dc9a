// Loop devices over the FUSE image file, set up with the loop driver's ioctls (linux/loop.h) rather
// than by running losetup: /dev/loop-control hands out a free device (LOOP_CTL_GET_FREE, creating
// nodes on demand), and one LOOP_CONFIGURE binds the file with its flags. Always direct I/O (no
// second page cache, and it is what makes FUSE_ASYNC_DIO pay off). Detach (LOOP_CLR_FD) is
// asynchronous in the kernel: detachLoop() polls until the device has really let go of the file.
//
// The ioctls, and the opens and closes of the device and of the FUSE-served file, run off the main
// thread (koffi / libuv workers): this process may itself be the FUSE server the kernel waits on.
// A kernel without LOOP_CONFIGURE (before 5.8) falls back to losetup.
import { close, open, constants as fsc } from 'node:fs';
import { readFile, readdir } from 'node:fs/promises';
import { basename } from 'node:path';
import { execa } from 'execa';
import { ObdkitError, errnoCode } from '../../src/util/errors.js';
import { ioctlAsync, syscallReason } from '../../src/util/syscalls.js';

// linux/loop.h
const LOOP_CLR_FD = 0x4c01;
const LOOP_CONFIGURE = 0x4c0a;
const LOOP_CTL_GET_FREE = 0x4c82;
const LO_FLAGS_READ_ONLY = 1;
const LO_FLAGS_DIRECT_IO = 16;
const LO_NAME_SIZE = 64;
/** struct loop_config: u32 fd, u32 block_size, struct loop_info64 (232 bytes), u64 reserved[8]. */
const LOOP_CONFIG_SIZE = 4 + 4 + 232 + 64;
const CONFIG_INFO = 8;
/** In loop_info64: five u64 (device, inode, rdevice, offset, sizelimit), then u32 number, encrypt_type, key_size, flags. */
const INFO_FLAGS = 52;
const INFO_FILE_NAME = 56;

/** Tries after another process took the device LOOP_CTL_GET_FREE offered (EBUSY). */
const MAX_BUSY_RETRIES = 64;

let configureUnsupported = false;

/** libuv opens every descriptor close-on-exec, so no RUN step inherits one. */
function openFd(path: string, flags: number): Promise<number> {
  return new Promise((resolve, reject) => open(path, flags, (err, fd) => (err ? reject(err) : resolve(fd))));
}

/** Closing the last descriptor of a block device flushes it, so this too stays off the main thread. */
function closeFd(fd: number): Promise<void> {
  return new Promise((resolve) => close(fd, () => resolve()));
}

function loopConfig(backingFd: number, file: string, readOnly: boolean): Buffer {
  const b = Buffer.alloc(LOOP_CONFIG_SIZE);
  b.writeUInt32LE(backingFd, 0);
  // block_size 0: the driver picks it (the backing file's direct-I/O alignment).
  b.writeUInt32LE(LO_FLAGS_DIRECT_IO | (readOnly ? LO_FLAGS_READ_ONLY : 0), CONFIG_INFO + INFO_FLAGS);
  // What losetup records too; informational (the kernel reports the real path in sysfs).
  const name = Buffer.from(file);
  name.copy(b, CONFIG_INFO + INFO_FILE_NAME, 0, Math.min(name.length, LO_NAME_SIZE - 1));
  return b;
}

/** Binds `file` to a free loop device with direct I/O (read-only if asked); returns `/dev/loopN`. */
export async function attachLoop(file: string, opts: { readOnly?: boolean } = {}): Promise<string> {
  const readOnly = opts.readOnly ?? false;
  if (configureUnsupported) return attachWithLosetup(file, readOnly);
  let backing: number;
  try {
    backing = await openFd(file, readOnly ? fsc.O_RDONLY : fsc.O_RDWR);
  } catch (err) {
    throw new ObdkitError('ELOOP', `cannot open loop backing file: ${syscallReason(err)}`, { file }, { cause: err });
  }
  try {
    const config = loopConfig(backing, file, readOnly);
    for (let attempt = 0; ; attempt++) {
      const device = await freeLoopDevice(file);
      let loopFd: number;
      try {
        loopFd = await openFd(device, fsc.O_RDWR);
      } catch (err) {
        // Removed (LOOP_CTL_REMOVE) by someone else between the two steps: ask again.
        if (errnoCode(err) === 'ENOENT' && attempt < MAX_BUSY_RETRIES) continue;
        throw new ObdkitError('ELOOP', `cannot open ${device}: ${syscallReason(err)}`, { file, device }, { cause: err });
      }
      try {
        await ioctlAsync(loopFd, LOOP_CONFIGURE, config, device);
        return device;
      } catch (err) {
        const code = errnoCode(err);
        // Another process bound the same free device first.
        if (code === 'EBUSY' && attempt < MAX_BUSY_RETRIES) continue;
        if (code === 'ENOTTY') configureUnsupported = true;
        if (code === 'ENOTTY' || code === 'EINVAL') return await attachWithLosetup(file, readOnly);
        throw new ObdkitError('ELOOP', `LOOP_CONFIGURE of ${device} failed: ${syscallReason(err)}`, { file, device }, { cause: err });
      } finally {
        await closeFd(loopFd);
      }
    }
  } finally {
    await closeFd(backing);
  }
}

async function freeLoopDevice(file: string): Promise<string> {
  let ctl: number;
  try {
    ctl = await openFd('/dev/loop-control', fsc.O_RDWR);
  } catch (err) {
    throw new ObdkitError('ELOOP', `cannot open /dev/loop-control: ${syscallReason(err)}`, { file }, { cause: err });
  }
  try {
    return `/dev/loop${await ioctlAsync(ctl, LOOP_CTL_GET_FREE, 0, '/dev/loop-control')}`;
  } catch (err) {
    throw new ObdkitError('ELOOP', `no free loop device: ${syscallReason(err)}`, { file }, { cause: err });
  } finally {
    await closeFd(ctl);
  }
}

async function attachWithLosetup(file: string, readOnly: boolean): Promise<string> {
  const args = ['-f', '--show', '--direct-io=on'];
  if (readOnly) args.push('-r');
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

/** Unbinds the device and waits until the kernel has released the backing file. */
export async function detachLoop(device: string, timeoutMs = 20_000): Promise<void> {
  let fd = -1;
  try {
    fd = await openFd(device, fsc.O_RDONLY);
    await ioctlAsync(fd, LOOP_CLR_FD, 0, device);
  } catch (err) {
    // Already unbound (ENXIO) or gone: nothing to do. Anything else with the file still bound fails.
    if ((await loopBackingFile(device)) !== null) {
      throw new ObdkitError('ELOOP', `LOOP_CLR_FD failed: ${syscallReason(err)}`, { file: device }, { cause: err });
    }
  } finally {
    // While other openers (a mount being torn down lazily) remain, the kernel unbinds at their last close.
    if (fd >= 0) await closeFd(fd);
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

/** All attached loop devices (what `losetup -a` shows), read from sysfs. */
export async function listLoops(): Promise<LoopEntry[]> {
  let names: string[];
  try {
    names = (await readdir('/sys/block')).filter((n) => /^loop\d+$/.test(n));
  } catch {
    return [];
  }
  names.sort((a, b) => Number(a.slice(4)) - Number(b.slice(4)));
  const out: LoopEntry[] = [];
  for (const n of names) {
    const backing = await loopBackingFile(n);
    if (backing !== null) out.push({ device: `/dev/${n}`, backingFile: backing.replace(/ \(deleted\)$/, '') });
  }
  return out;
}
