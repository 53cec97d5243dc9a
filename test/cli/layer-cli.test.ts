// End-to-end checks of the `obdkit layer` / `obdkit zfile` commands as scripts call them: the real
// binary, real files, and the reference tools' verdict on what it writes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { execa } from 'execa';
import { obdCheck, repoRoot, requireOracle, runOracleTool } from '../helpers/oracle.js';

const bin = join(repoRoot, 'bin', 'obdkit.js');
const samples = join(repoRoot, 'testdata', 'overlaybd-samples');
const U = 'aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee';

async function obdkit(args: string[], input?: Buffer): Promise<{ exitCode: number; stdout: Buffer; stderr: string }> {
  const r = await execa(process.execPath, [bin, ...args], {
    reject: false, encoding: 'buffer', ...(input ? { input } : { stdin: 'ignore' }), timeout: 120_000,
  });
  return { exitCode: r.exitCode ?? -1, stdout: Buffer.from(r.stdout), stderr: Buffer.from(r.stderr).toString() };
}

function tmp(t: { after: (fn: () => void) => void }): string {
  const d = mkdtempSync(join(tmpdir(), 'obdkit-cli-'));
  t.after(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

test('layer commit reproduces the reference commit byte for byte', async (t) => {
  const d = tmp(t);
  const out = join(d, 'c');
  const r = await obdkit(['layer', 'commit', join(samples, 'pattern.rw.data'), join(samples, 'pattern.rw.index'), out, '--uuid', U, '--message', 'oracle sample']);
  assert.equal(r.exitCode, 0, r.stderr);
  assert.ok(readFileSync(out).equals(readFileSync(join(samples, 'pattern.commit'))));
});

test('layer commit --tar reproduces the blob converters push, and obd-check accepts it', async (t) => {
  const d = tmp(t);
  const out = join(d, 'c.tar');
  const r = await obdkit(['layer', 'commit', join(samples, 'pattern.rw.data'), join(samples, 'pattern.rw.index'), out, '--tar', '--uuid', U]);
  assert.equal(r.exitCode, 0, r.stderr);
  const res = JSON.parse(r.stdout.toString()) as { digest: string; size: number };
  assert.equal(res.digest, 'sha256:5db9cef738d8a64e59b76ccdedd31a938464e38a2b2737efacd35dc413b56e94');
  const oracle = requireOracle(t);
  if (!oracle) return;
  const v = await obdCheck(oracle, out);
  assert.equal(v.result, 'VALID', v.output);
});

test('create, write (unaligned), commit --zfile --algorithm zstd, cat reads back', async (t) => {
  const d = tmp(t);
  const [data, index] = [join(d, 'data'), join(d, 'index')];
  assert.equal((await obdkit(['layer', 'create', data, index, '--size', '1'])).exitCode, 0);
  const a = randomBytes(10_000);
  const b = randomBytes(700);
  assert.equal((await obdkit(['layer', 'write', data, index, '--offset', '1000'], a)).exitCode, 0);
  assert.equal((await obdkit(['layer', 'write', data, index, '--offset', '5003'], b)).exitCode, 0);
  const expect = Buffer.alloc(20_000);
  a.copy(expect, 1000);
  b.copy(expect, 5003);
  const out = join(d, 'layer.zst');
  const c = await obdkit(['layer', 'commit', data, index, out, '--zfile', '--algorithm', 'zstd', '--block-size', '8192', '--uuid', U]);
  assert.equal(c.exitCode, 0, c.stderr);
  const cat = await obdkit(['layer', 'cat', out, '--offset', '0', '--length', '20000']);
  assert.equal(cat.exitCode, 0, cat.stderr);
  assert.ok(cat.stdout.equals(expect));
  const oracle = requireOracle(t);
  if (!oracle) return;
  const v = await obdCheck(oracle, out);
  assert.equal(v.result, 'VALID', v.output);
});

test('layer cat stacks ext4 layers bottom first', async () => {
  const { gunzipSync } = await import('node:zlib');
  const d = mkdtempSync(join(tmpdir(), 'obdkit-cli-'));
  try {
    // ext4_64.tar.gz holds one tar member, the base layer, at byte 512.
    const tarball = gunzipSync(readFileSync(join(samples, 'ext4_64.tar.gz')));
    const size = parseInt(tarball.subarray(124, 136).toString('latin1').trim(), 8);
    const base = join(d, 'ext4_64');
    writeFileSync(base, tarball.subarray(512, 512 + size));
    const layers = [base, join(samples, 'ext4-layer0.commit.lz4.zfile.tar'), join(samples, 'ext4-layer1.commit.lz4.zfile.tar')];
    // The ext4 superblock sits at byte 1024; its magic 0xEF53 is at offset 56 inside it.
    const sb = await obdkit(['layer', 'cat', ...layers, '--offset', '1024', '--length', '1024']);
    assert.equal(sb.exitCode, 0, sb.stderr);
    assert.equal(sb.stdout.readUInt16LE(56), 0xef53);
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
});

test('layer inspect reports kind, wrapping, uuid and compression', async () => {
  const r = await obdkit(['layer', 'inspect', join(samples, 'pattern.commit.zstd-bs16.zfile')]);
  assert.equal(r.exitCode, 0, r.stderr);
  const info = JSON.parse(r.stdout.toString()) as Record<string, unknown>;
  assert.equal(info.kind, 'lsmt-commit');
  assert.equal(info.uuid, U.toUpperCase());
  assert.equal(info.parentUuid, '00000000-0000-0000-0000-000000000000');
  assert.equal(info.virtualSize, 1073741824);
  assert.equal(info.extentCount, 4);
  assert.equal(info.compression, 'zstd');
  assert.equal(info.blockSize, 16384);
});

test('layer verify: good blobs pass; a flipped byte, truncation and the 64 KiB quirk fail with an offset', async (t) => {
  for (const f of ['pattern.commit', 'pattern.commit.lz4.zfile', 'pattern.commit.lz4.zfile.tar', 'pattern.zstd.zfile', 'ext4-layer1.commit.lz4.zfile.tar']) {
    const r = await obdkit(['layer', 'verify', join(samples, f)]);
    assert.equal(r.exitCode, 0, `${f}: ${r.stderr}`);
  }
  const d = tmp(t);
  const good = readFileSync(join(samples, 'pattern.commit.lz4.zfile.tar'));
  const flipped = Buffer.from(good);
  flipped[1536 + 512 + 100] ^= 0x40;
  writeFileSync(join(d, 'flipped'), flipped);
  writeFileSync(join(d, 'cut'), good.subarray(0, 70_000));
  writeFileSync(join(d, 'empty'), Buffer.alloc(0));
  for (const [name, pattern] of [['flipped', /byte offset \d+/], ['cut', /byte offset \d+/], ['empty', /byte offset 0|byte offset/]] as const) {
    const r = await obdkit(['layer', 'verify', join(d, name)]);
    assert.notEqual(r.exitCode, 0, name);
    assert.match(r.stderr, pattern, name);
    assert.match(r.stderr, new RegExp(name), name);
  }
  const q = await obdkit(['layer', 'verify', join(samples, 'quirk-pattern.lz4-bs64.zfile')]);
  assert.notEqual(q.exitCode, 0);
  assert.match(q.stderr, /byte offset \d+.*65536/);
});

test('zfile compress output passes overlaybd-zfile --verify and decompresses back', async (t) => {
  const d = tmp(t);
  const out = join(d, 'p.zfile');
  assert.equal((await obdkit(['zfile', 'compress', join(samples, 'pattern.raw'), out, '--block-size', '32768'])).exitCode, 0);
  const back = join(d, 'p.raw');
  assert.equal((await obdkit(['zfile', 'decompress', out, back])).exitCode, 0);
  assert.ok(readFileSync(back).equals(readFileSync(join(samples, 'pattern.raw'))));
  const oracle = requireOracle(t);
  if (!oracle) return;
  const v = await runOracleTool(oracle, 'overlaybd-zfile', ['--verify', out]);
  assert.equal(v.exitCode, 0, v.output);
  const bad = await obdkit(['zfile', 'compress', join(samples, 'pattern.raw'), join(d, 'x'), '--block-size', '65536']);
  assert.notEqual(bad.exitCode, 0);
  assert.match(bad.stderr, /block/i);
});

test('layer commit takes a writable directory (writable_data + writable_index) and an output', async (t) => {
  const d = tmp(t);
  const w = join(d, 'w');
  const { mkdirSync } = await import('node:fs');
  mkdirSync(w);
  assert.equal((await obdkit(['layer', 'create', join(w, 'writable_data'), join(w, 'writable_index'), '--size', '1'])).exitCode, 0);
  const bytes = randomBytes(4096);
  assert.equal((await obdkit(['layer', 'write', join(w, 'writable_data'), join(w, 'writable_index'), '--offset', '8192'], bytes)).exitCode, 0);
  const out = join(d, 'layer.tar');
  const c = await obdkit(['layer', 'commit', w, out, '--tar']);
  assert.equal(c.exitCode, 0, c.stderr);
  const cat = await obdkit(['layer', 'cat', out, '--offset', '8192', '--length', '4096']);
  assert.ok(cat.stdout.equals(bytes));
  const usage = await obdkit(['layer', 'commit', join(d, 'nope'), out]);
  assert.notEqual(usage.exitCode, 0);
  assert.match(usage.stderr, /writable directory/);
});
