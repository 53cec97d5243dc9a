#!/usr/bin/env node
// Generates TypeScript message codecs and grpc-js service definitions from protos/ into src/server/gen/
// (git-ignored; run before tsc). Needs `protoc` (Debian: protobuf-compiler, which also ships the
// google/protobuf well-known types) and the ts-proto plugin from node_modules.
import { mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { spawnSync } from 'node:child_process';

const repo = new URL('..', import.meta.url).pathname;
const protoRoot = join(repo, 'protos');
const outDir = join(repo, 'src/server/gen');
const plugin = join(repo, 'node_modules/.bin/protoc-gen-ts_proto');

function walk(dir) {
  const out = [];
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...walk(p));
    else if (name.endsWith('.proto')) out.push(relative(protoRoot, p));
  }
  return out;
}

const options = [
  'outputServices=grpc-js',
  'esModuleInterop=true',
  'importSuffix=.js',
  // int64 fields hold nanosecond times and byte sizes beyond 2^53.
  'forceLong=bigint',
  'useDate=true',
  'env=node',
  'outputJsonMethods=false',
  'unrecognizedEnum=false',
  'useOptionals=messages',
].join(',');

rmSync(outDir, { recursive: true, force: true });
mkdirSync(outDir, { recursive: true });
const r = spawnSync(
  'protoc',
  [`--plugin=protoc-gen-ts_proto=${plugin}`, `--ts_proto_out=${outDir}`, `--ts_proto_opt=${options}`, `-I${protoRoot}`, '-I/usr/include', ...walk(protoRoot)],
  { stdio: 'inherit', cwd: protoRoot },
);
if (r.error) {
  console.error(`gen-protos: cannot run protoc (${r.error.message}); install protobuf-compiler`);
  process.exit(1);
}
process.exit(r.status ?? 1);
