// The writable layer of the device without the kernel: RW pair headers, group-committed records,
// replay after reopen, crash recovery (torn tail, records whose data never landed), the reference
// tools' own RW pair, and several threads writing one shared index.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { MergedBackend } from '../../worker/device/backend.js';
import { createPair, decodeHeader, decodeRecord, encodeRecord, recoverPair, HEADER_SIZE } from '../../worker/device/rw-pair.js';
import { createSharedState, SharedUpper, UNMAPPED, ZEROED } from '../../worker/device/shared-upper.js';
import { tempDir } from './helpers.js';

const samples = new URL('../../../testdata/overlaybd-samples/', import.meta.url).pathname;
const MiB = 1024 * 1024;

function open(dir: string, vsize = 64 * MiB) {
  const paths = { data: join(dir, 'writable_data'), index: join(dir, 'writable_index') };
  const r = recoverPair(paths);
  const state = createSharedState(paths, vsize, r.dataTail, r.records);
  return { paths, r, state, upper: new SharedUpper(state) };
}

test('a new RW pair has overlaybd-create headers: data flags 3, index flags 1 with index_offset 4096', () => {
  const t = tempDir('pair');
  try {
    const paths = { data: join(t.path, 'd'), index: join(t.path, 'i') };
    createPair(paths, 64 * MiB);
    const dh = decodeHeader(readFileSync(paths.data), paths.data);
    const ih = decodeHeader(readFileSync(paths.index), paths.index);
    assert.equal(dh.flags, 3);
    assert.equal(ih.flags, 1);
    assert.equal(ih.indexOffset, HEADER_SIZE);
    assert.equal(ih.virtualSize, 64 * MiB);
    assert.equal(dh.uuid, ih.uuid);
    assert.match(dh.uuid, /^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}$/);
    assert.equal(dh.parentUuid, '00000000-0000-0000-0000-000000000000');
    assert.equal(statSync(paths.data).size, HEADER_SIZE);
  } finally {
    t.cleanup();
  }
});

test('writes and discards replay after reopen; records are held back until flush', () => {
  const t = tempDir('replay');
  try {
    createPair({ data: join(t.path, 'writable_data'), index: join(t.path, 'writable_index') }, 64 * MiB);
    const a = open(t.path);
    a.upper.write(16, Buffer.alloc(8192, 1));
    a.upper.write(20, Buffer.alloc(1024, 2)); // overwrite inside the first write
    a.upper.discard(0, 18);
    assert.equal(statSync(a.paths.index).size, HEADER_SIZE, 'records not yet appended');
    a.upper.flush();
    assert.equal(statSync(a.paths.index).size, HEADER_SIZE + 3 * 16);
    const before = Array.from(new Uint32Array(a.state.table).subarray(0, 40));
    a.upper.close();
    const b = open(t.path);
    assert.deepEqual(Array.from(new Uint32Array(b.state.table).subarray(0, 40)), before);
    assert.equal(before[0], ZEROED);
    assert.equal(before[17], ZEROED);
    assert.equal(before[18], 8 + 2);
    assert.equal(before[20], 8 + 16);
    assert.equal(before[32], UNMAPPED);
    const backend = new MergedBackend(64 * MiB, b.upper, null);
    const out = Buffer.alloc(16 * 512);
    backend.readInto(16 * 512, out);
    assert.ok(out.subarray(0, 1024).every((x) => x === 0));
    assert.ok(out.subarray(2048, 3072).every((x) => x === 2));
    assert.ok(out.subarray(4096).every((x) => x === 1));
    backend.close();
  } finally {
    t.cleanup();
  }
});

test('recovery cuts a torn record and every record from the first one whose data is missing', () => {
  const t = tempDir('recover');
  try {
    createPair({ data: join(t.path, 'writable_data'), index: join(t.path, 'writable_index') }, 64 * MiB);
    const a = open(t.path);
    a.upper.write(0, Buffer.alloc(4096, 7));
    a.upper.close();
    const rec = Buffer.alloc(32);
    encodeRecord({ offset: 100, length: 8, moffset: 5000, zeroed: false }, rec, 0); // data never written
    encodeRecord({ offset: 200, length: 8, moffset: 8, zeroed: false }, rec, 16); // after it: not covered by any flush
    appendFileSync(a.paths.index, rec);
    appendFileSync(a.paths.index, Buffer.alloc(7, 0xee)); // torn tail
    const r = recoverPair(a.paths);
    assert.equal(r.records.length, 1);
    assert.equal(r.truncatedBytes, 32 + 7);
    assert.equal(statSync(a.paths.index).size, HEADER_SIZE + 16);
    assert.deepEqual(decodeRecord(readFileSync(a.paths.index), HEADER_SIZE), { offset: 0, length: 8, moffset: 8, zeroed: false });
  } finally {
    t.cleanup();
  }
});

test("the reference tools' RW pair (pattern.rw.data/index) replays to pattern.raw", () => {
  const paths = { data: join(samples, 'pattern.rw.data'), index: join(samples, 'pattern.rw.index') };
  const t = tempDir('golden-rw');
  try {
    // recoverPair opens the index read-write; work on copies.
    const copy = { data: join(t.path, 'writable_data'), index: join(t.path, 'writable_index') };
    appendFileSync(copy.data, readFileSync(paths.data));
    appendFileSync(copy.index, readFileSync(paths.index));
    const r = recoverPair(copy);
    assert.equal(r.records.length, 50);
    assert.equal(r.truncatedBytes, 0);
    assert.equal(r.virtualSize, 1024 * MiB);
    const state = createSharedState(copy, r.virtualSize, r.dataTail, r.records);
    const backend = new MergedBackend(r.virtualSize, new SharedUpper(state), null);
    const out = Buffer.alloc(MiB);
    backend.readInto(0, out);
    assert.ok(out.equals(readFileSync(join(samples, 'pattern.raw'))));
    backend.close();
  } finally {
    t.cleanup();
  }
});

test('four threads writing one shared upper see each other and leave an index that replays to the same table', async () => {
  const t = tempDir('threads');
  try {
    createPair({ data: join(t.path, 'writable_data'), index: join(t.path, 'writable_index') }, 256 * MiB);
    const a = open(t.path, 256 * MiB);
    const workers = [0, 1, 2, 3].map(
      (id) => new Worker(new URL('./upper-writer-worker.js', import.meta.url), { workerData: { state: a.state, id, rounds: 400 } }),
    );
    await Promise.all(workers.map((w) => new Promise((res, rej) => w.once('exit', res).once('error', rej))));
    const live = new Uint32Array(a.state.table);
    const backend = new MergedBackend(256 * MiB, a.upper, null);
    for (let id = 0; id < 4; id++) {
      const out = Buffer.alloc(4096);
      backend.readInto((id * 1000 + 99 * 8) * 512, out);
      assert.ok(out.every((x) => x === ((id * 16 + (399 % 16)) & 0xff)), `worker ${id}'s last write is visible`);
    }
    const shared = Buffer.alloc(4096);
    backend.readInto(100_000 * 512, shared);
    assert.ok([0x80, 0x81, 0x82, 0x83].includes(shared[0]!) && shared.every((x) => x === shared[0]));
    backend.close();
    const b = open(t.path, 256 * MiB);
    const replayed = new Uint32Array(b.state.table);
    let diff = 0;
    for (let i = 0; i < 210_000; i++) if (replayed[i] !== live[i]) diff++;
    assert.equal(diff, 0);
    b.upper.close();
  } finally {
    t.cleanup();
  }
});
