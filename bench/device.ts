// Device benchmark: fio on ext4 over the obdkit device (FUSE file + loop, served by this process)
// against ext4 on a loop device over a plain file, in the same run and on the same disk; then tar -x
// of a generated ~300 MB tree onto the device against a plain directory. Prints obdkit/plain ratios
// (goal: >= 0.9 each). Needs root, /dev/fuse, fio. Usage: node dist/bench/device.js [--workers N] [--dir D]
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { FuseLoopSnapshotter } from '../worker/device/fuse-loop-snapshotter.js';
import { mkfsExt4, mountExt4, unmount } from '../worker/mount/ext4.js';
import { attachLoop, detachLoop } from '../worker/mount/loop.js';
import { cleanupStale } from '../worker/mount/teardown.js';

interface FioJob {
  name: string;
  args: string[];
  metric: 'bw' | 'iops';
}

const JOBS: FioJob[] = [
  { name: 'seq write 1M QD8', args: ['--rw=write', '--bs=1M', '--iodepth=8', '--size=1G'], metric: 'bw' },
  { name: 'seq read 1M QD8', args: ['--rw=read', '--bs=1M', '--iodepth=8', '--size=1G'], metric: 'bw' },
  { name: '4k randwrite QD16', args: ['--rw=randwrite', '--bs=4k', '--iodepth=16', '--size=1G', '--time_based', '--runtime=6'], metric: 'iops' },
  { name: '4k randread QD16', args: ['--rw=randread', '--bs=4k', '--iodepth=16', '--size=1G', '--time_based', '--runtime=6'], metric: 'iops' },
];

function median(xs: number[]): number {
  const s = [...xs].sort((x, y) => x - y);
  return s[Math.floor(s.length / 2)]!;
}

function arg(name: string, dflt: string): string {
  const i = process.argv.indexOf(name);
  return i > 0 && process.argv[i + 1] ? process.argv[i + 1]! : dflt;
}

async function dropCaches(): Promise<void> {
  await execa('bash', ['-c', 'sync; echo 3 > /proc/sys/vm/drop_caches']);
}

async function fio(dir: string, job: FioJob): Promise<number> {
  await dropCaches();
  const r = await execa('fio', [
    '--name=bench',
    `--directory=${dir}`,
    '--filename=fio.dat',
    '--direct=1',
    '--ioengine=libaio',
    '--output-format=json',
    ...job.args,
  ]);
  const j = JSON.parse(r.stdout) as { jobs: Array<{ read: { bw: number; iops: number }; write: { bw: number; iops: number } }> };
  const side = job.args.some((a) => a.includes('read')) ? j.jobs[0]!.read : j.jobs[0]!.write;
  return job.metric === 'bw' ? side.bw / 1024 : side.iops; // MiB/s or IOPS
}

async function timeTar(tarFile: string, dest: string): Promise<number> {
  await dropCaches();
  const t0 = process.hrtime.bigint();
  await execa('bash', ['-c', `tar -xf ${tarFile} -C ${dest} && sync`]);
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

async function makeTree(root: string): Promise<string> {
  // ~300 MB in ~12k files: mostly small files, a few large ones, like an OS image layer.
  const src = join(root, 'tree');
  await execa('python3', [
    '-c',
    `
import os, random
random.seed(7)
root = ${JSON.stringify(src)}
blob = os.urandom(8 << 20)
total = 0
n = 0
while total < 300 << 20:
    d = os.path.join(root, 'd%03d' % (n // 100), 's%d' % (n % 7))
    os.makedirs(d, exist_ok=True)
    size = random.choice([200, 1500, 4000, 12000, 30000, 60000]) if n % 50 else random.randint(1 << 20, 6 << 20)
    off = random.randint(0, len(blob) - size)
    with open(os.path.join(d, 'f%d' % n), 'wb') as f:
        f.write(blob[off:off + size])
    total += size
    n += 1
print(n, total)
`,
  ]);
  const tarFile = join(root, 'tree.tar');
  await execa('tar', ['-cf', tarFile, '-C', src, '.']);
  rmSync(src, { recursive: true, force: true });
  return tarFile;
}

async function main(): Promise<void> {
  const workers = Number(arg('--workers', '4'));
  const base = mkdtempSync(join(arg('--dir', '/var/tmp'), 'obdkit-bench-'));
  const runDir = join(base, 'run');
  await cleanupStale(runDir);
  const snap = new FuseLoopSnapshotter({ runDir, workers });
  const plainImg = join(base, 'plain.img');
  const plainMnt = join(base, 'plain-mnt');
  let plainLoop: string | undefined;
  try {
    const dev = await snap.prepare(join(base, 'w'), []);
    await execa('truncate', ['-s', '64G', plainImg]);
    plainLoop = await attachLoop(plainImg);
    await mkfsExt4(plainLoop);
    mkdirSync(plainMnt, { recursive: true });
    await mountExt4(plainLoop, plainMnt, { readOnly: false });

    const only = arg('--jobs', '');
    const repeat = Number(arg('--repeat', '1'));
    const jobs = JOBS.filter((j) => only === '' || only.split(',').some((w) => j.name.includes(w)));
    console.log(`fio, ext4 on obdkit device (${workers} FUSE workers) vs ext4 on loop over a plain file`);
    console.log(`${'job'.padEnd(20)} ${'obdkit'.padStart(10)} ${'plain'.padStart(10)} ${'ratio'.padStart(6)}`);
    for (const job of jobs) {
      // Alternate the two targets and report medians: this machine's disk is shared and noisy.
      // Reads need a laid-out file that is not in any page cache: write it first, then drop caches.
      if (job.args.some((x) => x.includes('read'))) {
        for (const dir of [dev.mountpoint, plainMnt]) {
          await execa('fio', ['--name=layout', `--directory=${dir}`, '--filename=fio.dat', '--rw=write', '--bs=1M', '--size=1G', '--direct=1', '--ioengine=libaio', '--iodepth=8', '--output-format=json']);
        }
      }
      const as: number[] = [];
      const bs: number[] = [];
      for (let i = 0; i < repeat; i++) {
        as.push(await fio(dev.mountpoint, job));
        bs.push(await fio(plainMnt, job));
      }
      const a = median(as);
      const b = median(bs);
      const unit = job.metric === 'bw' ? 'MiB/s' : 'IOPS';
      console.log(`${job.name.padEnd(20)} ${a.toFixed(0).padStart(10)} ${b.toFixed(0).padStart(10)} ${(a / b).toFixed(2).padStart(6)}  ${unit}`);
    }
    await execa('rm', ['-f', join(dev.mountpoint, 'fio.dat'), join(plainMnt, 'fio.dat')]);

    if (process.argv.includes('--no-tar')) return;
    const tarFile = await makeTree(base);
    const { stdout: size } = await execa('du', ['-sh', tarFile]);
    const plainDir = join(base, 'plain-dir');
    mkdirSync(plainDir);
    mkdirSync(join(dev.mountpoint, 'x'));
    const tDev = await timeTar(tarFile, join(dev.mountpoint, 'x'));
    const tDir = await timeTar(tarFile, plainDir);
    console.log(`tar -x ${size.split('\t')[0]}: obdkit device ${tDev.toFixed(2)} s, plain directory ${tDir.toFixed(2)} s, ratio (dir/device) ${(tDir / tDev).toFixed(2)}`);
    await snap.remove(dev);
  } finally {
    await snap.close().catch(() => undefined);
    await unmount(plainMnt).catch(() => undefined);
    if (plainLoop) await detachLoop(plainLoop).catch(() => undefined);
    rmSync(base, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
