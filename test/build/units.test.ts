// Pure parts of the build pipeline: source wildcards, history marks for steps that left no layer,
// and the store's atomic blob adoption and records.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { ContentStore } from '../../src/store/content-store.js';
import { KeyLock } from '../../src/store/key-lock.js';
import { expandSource } from '../../worker/build/glob.js';
import { historyForLayers } from '../../worker/build/image-output.js';
import type { LayersResult } from '../../worker/build/result.js';
import type { LayerRecord } from '../../src/store/layer-record.js';

const layer = (n: number): LayerRecord => {
  const d = 'sha256:' + String(n).repeat(64).slice(0, 64);
  return { digest: d, size: 1, uuid: '00000000-0000-0000-0000-000000000000', parentUuid: '00000000-0000-0000-0000-000000000000', diffId: d };
};

describe('expandSource', () => {
  test('wildcards match per path component, sorted; plain paths pass through', () => {
    const d = mkdtempSync(join(tmpdir(), 'obdkit-glob-'));
    try {
      mkdirSync(join(d, 'src/a'), { recursive: true });
      for (const f of ['src/x.js', 'src/y.js', 'src/z.ts', 'src/a/w.js', 'README']) writeFileSync(join(d, f), '');
      assert.deepEqual(expandSource(d, 'src/*.js'), ['/src/x.js', '/src/y.js']);
      assert.deepEqual(expandSource(d, '/src/?.ts'), ['/src/z.ts']);
      assert.deepEqual(expandSource(d, 'src/[xz].*'), ['/src/x.js', '/src/z.ts']);
      assert.deepEqual(expandSource(d, '*/a/*.js'), ['/src/a/w.js']);
      assert.deepEqual(expandSource(d, 'nothing*'), []);
      assert.deepEqual(expandSource(d, 'missing/plain'), ['/missing/plain']);
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });
});

describe('historyForLayers', () => {
  test('a step without a layer is marked empty; base history is aligned with base layers', () => {
    const chain: LayersResult = { kind: 'layers', layers: [layer(1), layer(2), layer(3)], steps: [true, false, true] };
    const h = historyForLayers(
      [{ created_by: 'base' }, { created_by: 'ENV x', empty_layer: true }, { created_by: 'RUN a' }, { created_by: 'RUN b' }, { created_by: 'COPY c' }],
      chain,
    );
    assert.deepEqual(h.map((x) => [x.created_by, x.empty_layer === true]), [
      ['base', false],
      ['ENV x', true],
      ['RUN a', false],
      ['RUN b', true],
      ['COPY c', false],
    ]);
    assert.equal(h.filter((x) => !x.empty_layer).length, chain.layers.length);
  });

  test('missing base history is padded, surplus is marked empty', () => {
    const two: LayersResult = { kind: 'layers', layers: [layer(1), layer(2), layer(3)], steps: [true] };
    const padded = historyForLayers([{ created_by: 'RUN a' }], two);
    assert.equal(padded.filter((x) => !x.empty_layer).length, 3);
    const none: LayersResult = { kind: 'layers', layers: [layer(3)], steps: [true] };
    const trimmed = historyForLayers([{ created_by: 'old1' }, { created_by: 'old2' }, { created_by: 'RUN a' }], none);
    assert.deepEqual(trimmed.map((x) => x.empty_layer === true), [true, true, false]);
  });
});

describe('ContentStore', () => {
  test('adopts blobs under their digest, keeps records, and a second copy of a blob is dropped', async () => {
    const d = mkdtempSync(join(tmpdir(), 'obdkit-store-'));
    try {
      const s = new ContentStore(d);
      const data = Buffer.from('blob bytes');
      const digest = 'sha256:' + createHash('sha256').update(data).digest('hex');
      for (let i = 0; i < 2; i++) {
        const tmp = s.tmpPath('t');
        writeFileSync(tmp, data);
        assert.equal(await s.adoptBlob(tmp, digest, data.length), s.blobPath(digest));
      }
      assert.ok(s.hasBlob(digest));
      await assert.rejects(async () => {
        const tmp = s.tmpPath('t');
        writeFileSync(tmp, data);
        await s.adoptBlob(tmp, digest, 99);
      });
      const rec: LayerRecord = { digest, size: data.length, uuid: 'A', parentUuid: 'B', diffId: digest };
      await s.putLayer(rec);
      assert.deepEqual(await s.getLayer(digest), rec);
      await s.putConverted(['sha256:' + 'e'.repeat(64)], rec);
      assert.deepEqual(await s.getConverted(['sha256:' + 'e'.repeat(64)]), rec);
      assert.equal(await s.getConverted(['sha256:' + 'f'.repeat(64)]), undefined);
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });

  test('KeyLock runs holders of one key one at a time, in order', async () => {
    const lock = new KeyLock();
    const seen: string[] = [];
    const job = (name: string, ms: number) =>
      lock.run('k', async () => {
        seen.push(`${name}+`);
        await new Promise((r) => setTimeout(r, ms));
        seen.push(`${name}-`);
      });
    await Promise.all([job('a', 20), job('b', 1), job('c', 1)]);
    assert.deepEqual(seen, ['a+', 'a-', 'b+', 'b-', 'c+', 'c-']);
  });
});
