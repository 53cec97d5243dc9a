// applyLayerFileInWorker: the same applier on a worker thread, fed from a file, with progress
// messages and errors carried back with their codes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { applyLayerFileInWorker } from '../../worker/apply/apply-in-worker.js';
import type { ApplyProgress } from '../../worker/apply/apply-layer.js';
import { buildTar } from './tar-fixture.js';

const samples = join(fileURLToPath(new URL('../../../', import.meta.url)), 'testdata/overlaybd-samples');

test('applies sample layers in a worker thread and reports progress', async () => {
  const base = mkdtempSync(join(tmpdir(), 'obdkit-apply-worker-'));
  try {
    const root = join(base, 'root');
    mkdirSync(root);
    const seen: ApplyProgress[] = [];
    const r0 = await applyLayerFileInWorker(join(samples, 'ext4-layer0.input.tar'), root, { progressIntervalMs: 0, onProgress: (p) => seen.push(p) });
    assert.equal(r0.diffId, 'sha256:42193688503ba4d5ef0d0c740812d8d237f31bf0813e88e4a57103b42eade828');
    assert.ok(seen.length > 0);
    assert.equal(seen[seen.length - 1]!.entries, r0.entries);
    await applyLayerFileInWorker(join(samples, 'ext4-layer1.input.tar'), root);
    assert.equal(readFileSync(join(root, 'etc/hello.txt'), 'utf8'), 'hello overwritten by B\n');
    assert.ok(!existsSync(join(root, 'etc/gone.txt')));

    writeFileSync(join(base, 'evil.tar'), buildTar([{ name: '../escape', data: 'x' }]));
    await assert.rejects(applyLayerFileInWorker(join(base, 'evil.tar'), root, { name: 'evil' }), (err: unknown) => {
      assert.ok(err instanceof Error);
      assert.equal((err as { code?: string }).code, 'EAPPLY_UNSAFE_PATH');
      assert.match(err.message, /evil/);
      return true;
    });
    assert.ok(!existsSync(join(base, 'escape')));
  } finally {
    rmSync(base, { recursive: true, force: true });
  }
});
