import { test } from 'node:test';
import assert from 'node:assert/strict';
import { crc32c as standardCrc32c } from '@node-rs/crc32';
import { ZFILE_BLOCK_CRC_SEED, crc32cRaw } from '../../src/overlaybd/crc32c.js';

const digits = Buffer.from('123456789', 'latin1');

test('raw CRC32C matches the format test vectors', () => {
  assert.equal(crc32cRaw(digits), 0x58e3fa20);
  assert.equal(crc32cRaw(digits, ZFILE_BLOCK_CRC_SEED), 0x3c9bd4e0);
  assert.equal(crc32cRaw(Buffer.alloc(512)), 0);
  // The standard (inverted) variant differs: a guard against using it by mistake.
  assert.equal(standardCrc32c(digits), 0xe3069283);
});

test('raw CRC32C chains: crc(a+b, s) = crc(b, crc(a, s))', () => {
  const a = Buffer.from('overlaybd-');
  const b = Buffer.from('sample\n');
  assert.equal(crc32cRaw(Buffer.concat([a, b]), 7), crc32cRaw(b, crc32cRaw(a, 7)));
});

test('raw CRC32C of empty input is the seed', () => {
  assert.equal(crc32cRaw(Buffer.alloc(0), 0), 0);
  assert.equal(crc32cRaw(Buffer.alloc(0), 0xdeadbeef), 0xdeadbeef);
});
