// sha256File keeps its workers between files: repeated and concurrent calls must still give each file
// its own digest, errors must stay final and carry the errno code, and idle workers must not keep the
// process alive (this file would never finish if they did).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { sha256File } from '../../src/overlaybd/digest.js';
import { sectorData, tempDir } from './lsmt-fixtures.js';

let tmp: ReturnType<typeof tempDir>;
before(() => {
  tmp = tempDir('digest');
});
after(() => tmp.cleanup());

test('repeated and concurrent sha256File calls match node:crypto for every file', async () => {
  const files = [0, 1, 4097, 5 * 1024 * 1024 + 3].map((size, i) => {
    const bytes = sectorData(i + 1, 0, Math.ceil(size / 512) || 1).subarray(0, size);
    const path = join(tmp.path, `f${i}`);
    writeFileSync(path, bytes);
    return { path, size, digest: `sha256:${createHash('sha256').update(bytes).digest('hex')}` };
  });
  for (let round = 0; round < 2; round++) {
    for (const f of files) assert.deepEqual(await sha256File(f.path), { digest: f.digest, size: f.size });
  }
  const all = await Promise.all([...files, ...files].map((f) => sha256File(f.path)));
  assert.deepEqual(all, [...files, ...files].map((f) => ({ digest: f.digest, size: f.size })));
});

test('an unreadable file fails with its errno code, and the next call still works', async () => {
  await assert.rejects(sha256File(join(tmp.path, 'missing')), (err: NodeJS.ErrnoException) => err.code === 'ENOENT');
  const p = join(tmp.path, 'after');
  writeFileSync(p, 'abc');
  assert.equal((await sha256File(p)).digest, 'sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
});
