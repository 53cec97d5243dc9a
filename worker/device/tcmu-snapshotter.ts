// The production device export: overlaybd-tcmu serves the device, obdkit only configures it, the
// way containerd's overlaybd snapshotter does. Per device: write config.v1.json, create the TCMU
// backstore in configfs (core/user_<hba>/dev_<id>: dev_config, max_data_area_mb, enable,
// attrib/cmd_time_out), expose it through a loopback SCSI target (loopback/naa.<prefix><id>/tpgt_1:
// nexus, lun/lun_0 → backstore link), read the target's address and wait for its /dev/sdX, then
// mkfs/mount. Teardown removes the same entries in reverse. The configfs and sysfs roots are
// parameters so the sequence can be exercised against an ordinary directory.
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ObdkitError, errnoCode } from '../../src/util/errors.js';
import { mkfsExt4, mountExt4, unmount } from '../mount/ext4.js';
import type { LowerSpec } from './lower-source.js';
import { createPair, type PairPaths } from './rw-pair.js';
import { DEFAULT_VIRTUAL_SIZE, pairPaths, type BlockSnapshotter, type DeviceHandle, type PrepareOptions, type ViewOptions } from './snapshotter.js';
import { buildOverlaybdConfig, writeConfigAtomic } from './tcmu-config.js';

export const OBD_HBA = 999999999;
export const OBD_LOOP_NAA_PREFIX = 199;
export const OBD_MAX_DATA_AREA_MB = 4;
/** math.MaxInt32/1000, the command timeout overlaybd's snapshotter sets. */
export const CMD_TIMEOUT = Math.floor(2147483647 / 1000);

export interface TcmuOptions {
  /** Where per-device configs, result files and the id counter live. */
  stateDir: string;
  configfsRoot?: string;
  sysRoot?: string;
  devRoot?: string;
  hba?: number;
  naaPrefix?: number;
  /** mkfs/mount the device (off when configfs is a stand-in directory). */
  mountFilesystem?: boolean;
  attachTimeoutMs?: number;
  /** Observer of every configfs/sysfs attribute write, in order. */
  onWrite?: (path: string, value: string) => void;
}

export class TcmuSnapshotter implements BlockSnapshotter {
  private readonly cfs: string;
  private readonly sys: string;
  private readonly dev: string;
  private readonly hba: number;
  private readonly naaPrefix: number;

  constructor(private readonly o: TcmuOptions) {
    this.cfs = o.configfsRoot ?? '/sys/kernel/config';
    this.sys = o.sysRoot ?? '/sys';
    this.dev = o.devRoot ?? '/dev';
    this.hba = o.hba ?? OBD_HBA;
    this.naaPrefix = o.naaPrefix ?? OBD_LOOP_NAA_PREFIX;
  }

  targetPath(id: string): string {
    return join(this.cfs, 'target', 'core', `user_${this.hba}`, `dev_${id}`);
  }

  loopbackId(id: string): string {
    return `naa.${String(this.naaPrefix).padStart(3, '0')}${'0'.repeat(13 - id.length)}${id}`;
  }

  loopbackPath(id: string): string {
    return join(this.cfs, 'target', 'loopback', this.loopbackId(id));
  }

  async prepare(writableDir: string, lowers: LowerSpec[], opts: PrepareOptions = {}): Promise<DeviceHandle> {
    mkdirSync(writableDir, { recursive: true });
    const upper = pairPaths(writableDir);
    const fresh = !existsSync(upper.data);
    // vsize 0 makes overlaybd-tcmu take the lowers' size (§2.4).
    if (fresh) createPair(upper, lowers.length > 0 ? 0 : (opts.virtualSize ?? DEFAULT_VIRTUAL_SIZE));
    return this.attach(lowers, upper, fresh && lowers.length === 0 && opts.mkfs !== false, opts.mountpoint);
  }

  async view(lowers: LowerSpec[], opts: ViewOptions = {}): Promise<DeviceHandle> {
    return this.attach(lowers, null, false, opts.mountpoint);
  }

  async commit(handle: DeviceHandle): Promise<PairPaths> {
    if (!handle.upper) throw new ObdkitError('EINVAL', 'commit of a read-only view', { file: handle.mountpoint });
    await this.detach(handle);
    return handle.upper;
  }

  async remove(handle: DeviceHandle): Promise<void> {
    await this.detach(handle);
    if (handle.upper) {
      rmSync(handle.upper.data, { force: true });
      rmSync(handle.upper.index, { force: true });
    }
  }

  /** The handle of a device this state dir knows, by where it is mounted (for `obdkit umount`). */
  findByMountpoint(mountpoint: string): DeviceHandle | null {
    const dir = join(this.o.stateDir, 'devices');
    for (const id of existsSync(dir) ? readdirSync(dir) : []) {
      try {
        const h = JSON.parse(readFileSync(join(dir, id, 'handle.json'), 'utf8')) as DeviceHandle;
        if (h.mountpoint === mountpoint) return h;
      } catch {
        // a device still being attached, or gone
      }
    }
    return null;
  }

  private nextId(): string {
    mkdirSync(this.o.stateDir, { recursive: true });
    const counter = join(this.o.stateDir, 'next-id');
    const n = existsSync(counter) ? Number(readFileSync(counter, 'utf8')) : 1;
    writeFileSync(counter, String(n + 1));
    return String(n);
  }

  private write(path: string, value: string): void {
    this.o.onWrite?.(path, value);
    writeFileSync(path, value);
  }

  private async attach(lowers: LowerSpec[], upper: PairPaths | null, mkfs: boolean, mountpoint?: string): Promise<DeviceHandle> {
    const id = this.nextId();
    const devDir = join(this.o.stateDir, 'devices', id);
    mkdirSync(devDir, { recursive: true });
    const configPath = join(devDir, 'config.v1.json');
    const resultFile = join(devDir, 'init-debug.log');
    writeConfigAtomic(configPath, buildOverlaybdConfig(lowers, upper, resultFile));
    const mp = mountpoint ?? join(devDir, 'mountpoint');
    const handle: DeviceHandle = { id, device: '', mountpoint: mp, writable: upper !== null };
    if (upper) handle.upper = upper;
    const target = this.targetPath(id);
    try {
      mkdirSync(target, { recursive: true });
      this.write(join(target, 'control'), `dev_config=overlaybd/${configPath}`);
      this.write(join(target, 'control'), `max_data_area_mb=${OBD_MAX_DATA_AREA_MB}`);
      try {
        this.write(join(target, 'enable'), '1');
      } catch (err) {
        const why = existsSync(resultFile) ? readFileSync(resultFile, 'utf8').trim() : String(err);
        throw new ObdkitError('ETCMU', `enabling the overlaybd backstore failed: ${why}`, { file: target });
      }
      mkdirSync(join(target, 'attrib'), { recursive: true });
      this.write(join(target, 'attrib', 'cmd_time_out'), String(CMD_TIMEOUT));
      const loop = this.loopbackPath(id);
      const tpgt = join(loop, 'tpgt_1');
      const lun = join(tpgt, 'lun', 'lun_0');
      mkdirSync(lun, { recursive: true });
      this.write(join(tpgt, 'nexus'), this.loopbackId(id));
      symlinkSync(target, join(lun, `dev_${id}`));
      const address = readFileSync(join(tpgt, 'address'), 'utf8').trim();
      const name = await this.waitForDisk(address);
      this.write(join(this.sys, 'block', name, 'device', 'timeout'), String(CMD_TIMEOUT));
      handle.device = join(this.dev, name);
      writeFileSync(join(devDir, 'device'), handle.device);
      writeFileSync(join(devDir, 'handle.json'), JSON.stringify(handle));
      if (this.o.mountFilesystem !== false) {
        if (mkfs) await mkfsExt4(handle.device);
        mkdirSync(mp, { recursive: true });
        await mountExt4(handle.device, mp, { readOnly: upper === null });
      }
      return handle;
    } catch (err) {
      await this.detach(handle).catch(() => undefined);
      throw err;
    }
  }

  private async waitForDisk(address: string): Promise<string> {
    const dir = join(this.sys, 'class', 'scsi_device', `${address}:0`, 'device', 'block');
    const deadline = Date.now() + (this.o.attachTimeoutMs ?? 5000);
    for (;;) {
      try {
        const names = readdirSync(dir);
        if (names.length > 0) return names[0]!;
      } catch {
        // not there yet
      }
      if (Date.now() > deadline) throw new ObdkitError('ETCMU', `no SCSI disk appeared for target ${address}`, { file: dir });
      await new Promise((res) => setTimeout(res, 10));
    }
  }

  private async detach(handle: DeviceHandle): Promise<void> {
    if (this.o.mountFilesystem !== false) await unmount(handle.mountpoint);
    const loop = this.loopbackPath(handle.id);
    const tpgt = join(loop, 'tpgt_1');
    const lun = join(tpgt, 'lun', 'lun_0');
    try {
      unlinkSync(join(lun, `dev_${handle.id}`));
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT') throw err;
    }
    for (const d of [lun, tpgt, loop, this.targetPath(handle.id)]) removeConfigfsDir(d);
    rmSync(join(this.o.stateDir, 'devices', handle.id), { recursive: true, force: true });
  }
}

/**
 * configfs removes a directory with rmdir(2) alone (its attribute files vanish with it). A plain
 * directory standing in for configfs needs its files removed first.
 */
function removeConfigfsDir(dir: string): void {
  try {
    rmdirSync(dir);
  } catch (err) {
    const code = errnoCode(err);
    if (code === 'ENOENT') return;
    if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw err;
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      if (e.isDirectory()) removeConfigfsDir(join(dir, e.name));
      else unlinkSync(join(dir, e.name));
    }
    rmdirSync(dir);
  }
}
