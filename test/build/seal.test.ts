// Sealing a step's writable layer: blocks identical to the lowers are dropped, discards over lower
// data stay as zeroed records, discards over unmapped space vanish, the result reads back as the
// full stack did, and the blob passes the reference tools' `obd-check`.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { commitLayer } from '../../src/overlaybd/commit.js';
import { FileRandomAccess } from '../../src/overlaybd/io.js';
import { unwrapLayerBlob, writeLayerBlob } from '../../src/overlaybd/layer-open.js';
import { openSealedLayer } from '../../src/overlaybd/lsmt-file.js';
import { RwLayer } from '../../src/overlaybd/rw-layer.js';
import { LayerStack } from '../../src/overlaybd/stack.js';
import { ContentStore } from '../../src/store/content-store.js';
import { chainId, stepLayerUuid, uuidFromDigest } from '../../worker/commit/chain-uuid.js';
import { sealStep } from '../../worker/commit/seal.js';
import { openLowerBlobs } from '../../worker/commit/lower-blobs.js';
import { obdCheck, requireOracle } from '../helpers/oracle.js';

const MiB = 1024 * 1024;
const VSIZE = 64 * MiB;

function block(fill: number, n = 4096): Buffer {
  return Buffer.alloc(n, fill);
}

describe('sealStep', () => {
  let dir: string;
  let store: ContentStore;
  let lowerBlob: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'obdkit-seal-'));
    store = new ContentStore(join(dir, 'root'));
    // The lower: data at 0..64 KiB (0x11), 1 MiB..1 MiB+16 KiB (0x22).
    const rw = RwLayer.create(join(dir, 'l.data'), join(dir, 'l.index'), { virtualSize: VSIZE });
    rw.write(0, block(0x11, 64 * 1024));
    rw.write(MiB, block(0x22, 16 * 1024));
    const out = join(dir, 'lower.blob');
    const r = await writeLayerBlob(commitLayer(rw, { uuid: uuidFromDigest(chainId(['sha256:' + 'a'.repeat(64)])) }), out, { zfile: true, tar: true });
    rw.close();
    await store.adoptBlob(out, r.digest, r.size);
    lowerBlob = store.blobPath(r.digest);
  });

  after(() => rmSync(dir, { recursive: true, force: true }));

  test('drops identical blocks and zeroed ranges nothing shows through, keeps the rest', async (t) => {
    const up = RwLayer.create(join(dir, 'u.data'), join(dir, 'u.index'), { virtualSize: VSIZE });
    // 32 KiB at 0: blocks 0-3 rewritten unchanged, block 4 changed, blocks 5-7 unchanged.
    const w = block(0x11, 32 * 1024);
    w.fill(0x99, 4 * 4096, 5 * 4096);
    up.write(0, w);
    up.discard(MiB, 8192); // over lower data: must stay
    up.discard(8 * MiB, 64 * 1024); // over nothing: dropped
    up.write(16 * MiB, block(0)); // zeros where nothing is mapped: dropped
    up.write(20 * MiB, block(0x33)); // new data
    up.close();

    const uuid = stepLayerUuid(['sha256:' + 'b'.repeat(64)], 'sha256:' + 'c'.repeat(64));
    const { layer, stats } = await sealStep({ upper: { data: join(dir, 'u.data'), index: join(dir, 'u.index') }, lowers: [lowerBlob], uuid, parentUuid: 'AAAAAAAA-AAAA-AAAA-AAAA-AAAAAAAAAAAA', store });
    assert.ok(layer);
    assert.equal(stats.writtenBytes, 32 * 1024 + 4096 + 4096);
    assert.equal(stats.identicalBytes, 7 * 4096 + 4096);
    assert.equal(stats.zeroedBytes, 8192 + 64 * 1024);
    assert.equal(stats.zeroedDroppedBytes, 64 * 1024);

    const f = new FileRandomAccess(store.blobPath(layer.digest));
    const sealed = openSealedLayer(unwrapLayerBlob(f).lsmt);
    assert.equal(sealed.uuid, uuid);
    assert.deepEqual(
      sealed.mappings().map((m) => [m.offset, m.length, m.zeroed]),
      [
        [32, 8, false],
        [2048, 16, true],
        [40960, 8, false],
      ],
    );
    // The stack with the new layer reads as the lower + full upper would.
    const lowers = openLowerBlobs([lowerBlob, store.blobPath(layer.digest)]);
    try {
      const s = lowers.stack as LayerStack;
      assert.ok(s.read(0, 16384).equals(block(0x11, 16384)));
      assert.ok(s.read(16384, 4096).equals(block(0x99)));
      assert.ok(s.read(MiB, 8192).equals(Buffer.alloc(8192)));
      assert.ok(s.read(MiB + 8192, 8192).equals(block(0x22, 8192)));
      assert.ok(s.read(20 * MiB, 4096).equals(block(0x33)));
    } finally {
      lowers.close();
      f.close();
    }

    const oracle = requireOracle(t);
    if (!oracle) return;
    for (const b of [lowerBlob, store.blobPath(layer.digest)]) {
      const v = await obdCheck(oracle, b);
      assert.equal(v.result, 'VALID', v.output);
    }
  });

  test('a step that changed nothing visible yields no layer', async () => {
    const up = RwLayer.create(join(dir, 'n.data'), join(dir, 'n.index'), { virtualSize: VSIZE });
    up.write(MiB, block(0x22, 8192));
    up.discard(30 * MiB, 4096);
    up.close();
    const r = await sealStep({ upper: { data: join(dir, 'n.data'), index: join(dir, 'n.index') }, lowers: [lowerBlob], uuid: uuidFromDigest('sha256:' + 'd'.repeat(64)), store });
    assert.equal(r.layer, undefined);
    assert.equal(r.stats.identicalBytes, 8192);
  });

  test('chain ids and uuids are deterministic', () => {
    const a = 'sha256:' + '1'.repeat(64);
    const b = 'sha256:' + '2'.repeat(64);
    assert.equal(chainId([a]), a);
    assert.equal(chainId([a, b]), chainId([a, b]));
    assert.notEqual(chainId([a, b]), chainId([b, a]));
    assert.match(uuidFromDigest(chainId([a, b])), /^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}$/);
  });
});
