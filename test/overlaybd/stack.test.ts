// Layer stacks: three layers with overlapping data, zeroed ranges and holes, read through LayerStack and
// compared with a naive per-sector model; a live upper layer seen as it is written; the virtual size
// rule; and the reference `overlaybd-merge` flattening the same lowers to the same bytes.
import { after, before, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { commitLayerToFile } from '../../src/overlaybd/commit.js';
import { BufferRandomAccess, FileRandomAccess } from '../../src/overlaybd/io.js';
import { openSealedLayer } from '../../src/overlaybd/lsmt-file.js';
import type { LayerView } from '../../src/overlaybd/lsmt-layer.js';
import { RwLayer } from '../../src/overlaybd/rw-layer.js';
import { LayerStack, MAX_STACK_LAYERS } from '../../src/overlaybd/stack.js';
import { requireOracle, runOracleTool } from '../helpers/oracle.js';
import { SectorModel, prng, sectorData, stackRead, tempDir } from './lsmt-fixtures.js';

const SECTORS = 4096;
const SIZE = SECTORS * 512;
let tmp: ReturnType<typeof tempDir>;
const models: SectorModel[] = [];
const files: FileRandomAccess[] = [];
let bottom: LayerView;
let middle: LayerView;
let top: RwLayer;
let middleCommit: string;
let bottomCommit: string;

/** Random writes and discards into a layer and its model; lengths up to 200 sectors so layers overlap. */
function fill(l: RwLayer, model: SectorModel, seed: number, ops: number): void {
  const rnd = prng(seed);
  for (let k = 0; k < ops; k++) {
    const len = 1 + rnd(200);
    const off = rnd(SECTORS - len);
    if (rnd(5) === 0) {
      l.discard(off * 512, len * 512);
      model.discard(off * 512, len * 512);
    } else {
      const b = sectorData(seed * 10000 + k, off, len);
      l.write(off * 512, b);
      model.write(off * 512, b);
    }
  }
}

before(async () => {
  tmp = tempDir('stack');
  const layers: RwLayer[] = [];
  for (let i = 0; i < 3; i++) {
    const l = RwLayer.create(join(tmp.path, `l${i}.data`), join(tmp.path, `l${i}.index`), { virtualSize: SIZE });
    const m = new SectorModel(SECTORS);
    fill(l, m, 31 + i, 40);
    layers.push(l);
    models.push(m);
  }
  // Bottom and middle become sealed files (the middle is also used as a writable pair view below).
  bottomCommit = join(tmp.path, 'l0.commit');
  middleCommit = join(tmp.path, 'l1.commit');
  await commitLayerToFile(layers[0]!, bottomCommit, {});
  await commitLayerToFile(layers[1]!, middleCommit, {});
  layers[0]!.close();
  files.push(new FileRandomAccess(bottomCommit));
  bottom = openSealedLayer(files[0]!);
  middle = layers[1]!;
  top = layers[2]!;
});

after(() => {
  for (const f of files) f.close();
  top.close();
  (middle as RwLayer).close();
  tmp.cleanup();
});

/** Checks reads and ownership (resolve) of a stack against the models of its layers. */
function assertStackMatches(stack: LayerStack, ms: readonly SectorModel[], what: string): void {
  assert.ok(stack.read(0, SIZE).equals(stackRead(ms, 0, SIZE)), `${what}: full read differs`);
  const rnd = prng(ms.length * 7 + 1);
  for (let k = 0; k < 40; k++) {
    const len = 1 + rnd(300);
    const off = rnd(SECTORS - len);
    assert.ok(stack.read(off * 512, len * 512).equals(stackRead(ms, off * 512, len * 512)), `${what}: read of sectors [${off}, +${len})`);
  }
  const pieces = stack.resolve(0, SIZE);
  let cursor = 0;
  for (const p of pieces) {
    assert.equal(p.offset, cursor, `${what}: pieces are contiguous`);
    assert.ok(p.length > 0);
    for (let s = p.offset / 512; s < (p.offset + p.length) / 512; s++) {
      let owner: number | null = null;
      for (let l = ms.length - 1; l >= 0; l--) {
        if (ms[l]!.cells[s] !== undefined) {
          owner = l;
          break;
        }
      }
      assert.equal(p.layer, owner, `${what}: owner of sector ${s}`);
      assert.equal(p.zeroed, owner !== null && ms[owner]!.cells[s] === 'zero', `${what}: zeroed at sector ${s}`);
    }
    cursor += p.length;
  }
  assert.equal(cursor, SIZE);
}

describe('LayerStack', () => {
  test('three layers (sealed, writable pair, writable pair) agree with the per-sector model', () => {
    // The layers really overlap: every kind of cell occurs under a higher layer's data somewhere.
    const c = models.map((m) => m.cells);
    assert.ok(c[0]!.some((x, s) => x !== undefined && c[1]![s] === 'zero'));
    assert.ok(c[2]!.some((x, s) => x === undefined && c[1]![s] === undefined && c[0]![s] !== undefined));
    assertStackMatches(new LayerStack([bottom, middle, top]), models, 'three lowers');
    assertStackMatches(new LayerStack([bottom]), models.slice(0, 1), 'bottom alone');
    assertStackMatches(new LayerStack([]), [], 'empty stack');
  });

  test('a live upper layer is seen as it is written', () => {
    const stack = new LayerStack([bottom, middle], { upper: top });
    assertStackMatches(stack, models, 'upper before');
    fill(top, models[2]!, 99, 30);
    assertStackMatches(stack, models, 'upper after more writes');
  });

  test('virtual size is the topmost non-zero one; at most 255 layers', () => {
    const fake = (virtualSize: number): LayerView => ({ mappings: () => [], data: new BufferRandomAccess(Buffer.alloc(0)), virtualSize, parentUuid: '' });
    assert.equal(new LayerStack([fake(100 * 512), fake(0)]).virtualSize, 100 * 512);
    assert.equal(new LayerStack([fake(100 * 512), fake(200 * 512), fake(0)]).virtualSize, 200 * 512);
    assert.equal(new LayerStack([fake(0)]).virtualSize, 0);
    assert.doesNotThrow(() => new LayerStack(new Array(MAX_STACK_LAYERS).fill(fake(0))));
    assert.throws(() => new LayerStack(new Array(MAX_STACK_LAYERS + 1).fill(fake(0))), /at most 255/);
    assert.throws(() => new LayerStack([]).read(1, 512), RangeError);
  });

  test('overlaybd-merge flattens the same sealed lowers to the same bytes', async (t: TestContext) => {
    const oracle = requireOracle(t);
    if (!oracle) return;
    // The merge tool refuses to start without the default service config (see the oracle README).
    if (!existsSync('/etc/overlaybd/overlaybd.json')) {
      mkdirSync('/etc/overlaybd', { recursive: true });
      copyFileSync(join(oracle, 'etc', 'overlaybd.json'), '/etc/overlaybd/overlaybd.json');
    }
    const cfg = join(tmp.path, 'merge.json');
    writeFileSync(cfg, JSON.stringify({ lowers: [{ file: bottomCommit }, { file: middleCommit }] }));
    const out = join(tmp.path, 'merged.lsmt');
    const r = await runOracleTool(oracle, 'overlaybd-merge', ['--compress=false', cfg, out]);
    assert.equal(r.exitCode, 0, r.output);
    const ra = new FileRandomAccess(out);
    const mra = new FileRandomAccess(middleCommit);
    try {
      const merged = openSealedLayer(ra);
      const ours = new LayerStack([bottom, openSealedLayer(mra)]);
      assert.ok(merged.read(0, SIZE).buf.equals(ours.read(0, SIZE)));
      assert.ok(ours.read(0, SIZE).equals(stackRead(models.slice(0, 2), 0, SIZE)));
      // Same ownership: what the merge maps (data or zeroed) is exactly what some lower maps.
      const mapped = new Array<boolean>(SECTORS).fill(false);
      for (const m of merged.records) for (let s = m.offset; s < m.offset + m.length; s++) mapped[s] = true;
      for (const p of ours.resolve(0, SIZE)) for (let s = p.offset / 512; s < (p.offset + p.length) / 512; s++) assert.equal(mapped[s], p.layer !== null, `sector ${s}`);
    } finally {
      ra.close();
      mra.close();
    }
  });
});
