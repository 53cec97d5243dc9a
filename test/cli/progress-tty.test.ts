// The terminal progress display, written to a fake terminal (a Writable with isTTY and columns) whose
// output is replayed through a tiny screen model (newline, carriage return, cursor up, erase line,
// erase below) to get the text a user would see. The clock is fixed and redraws are unthrottled, so
// every frame is drawn as events arrive; nothing here depends on timing.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { TtyProgress } from '../../src/cli/progress-tty.js';
import { makeProgress, wantsTty } from '../../src/cli/progress.js';
import { PlainProgress } from '../../worker/build/progress.js';
import type { ProgressEvent } from '../../src/solver/solver.js';
import type { Vertex } from '../../src/solver/ops.js';

class FakeTty extends Writable {
  isTTY = true;
  chunks: string[] = [];
  constructor(readonly columns: number) {
    super();
  }
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    this.chunks.push(chunk.toString('utf8'));
    cb();
  }
  /** The screen after replaying everything written. */
  screen(): string[] {
    const lines: string[] = [''];
    let row = 0;
    let col = 0;
    const text = this.chunks.join('');
    for (let i = 0; i < text.length; i++) {
      const ch = text[i]!;
      if (ch === '\x1b') {
        const m = /^\x1b\[(\d*)([A-Za-z])/.exec(text.slice(i));
        assert.ok(m, `unknown escape at ${i}`);
        const n = m[1] ? Number(m[1]) : 1;
        if (m[2] === 'A') row = Math.max(0, row - n);
        else if (m[2] === 'K') lines[row] = lines[row]!.slice(0, col);
        else if (m[2] === 'J') {
          lines[row] = lines[row]!.slice(0, col);
          lines.length = row + 1;
        } else assert.fail(`unexpected escape ${m[0]}`);
        i += m[0].length - 1;
      } else if (ch === '\n') {
        row++;
        col = 0;
        while (lines.length <= row) lines.push('');
      } else if (ch === '\r') col = 0;
      else {
        const l = lines[row]!.padEnd(col);
        lines[row] = l.slice(0, col) + ch + l.slice(col + 1);
        col++;
      }
    }
    while (lines.length && lines[lines.length - 1] === '') lines.pop();
    return lines;
  }
}

const T0 = Date.UTC(2026, 0, 1, 12, 0, 0);
let clock = T0;
const at = (ms: number): Date => new Date(T0 + ms);

function ev(type: 'started' | 'cached' | 'completed', id: string, name: string, ms: number): ProgressEvent {
  return { type, vertex: id, name, inputs: [], key: '', time: at(ms) };
}
function logEv(id: string, name: string, ms: number, text: string): ProgressEvent {
  return { type: 'log', vertex: id, name, inputs: [], key: '', time: at(ms), stream: 1, data: Buffer.from(text) };
}
function errEv(id: string, name: string, ms: number, error: string): ProgressEvent {
  return { type: 'error', vertex: id, name, inputs: [], key: '', time: at(ms), error };
}
const vertex = (id: string, name: string): Vertex => ({ id, name, inputs: [], op: { kind: 'scratch' } as unknown as Vertex['op'] });

const FROM = '[1/3] FROM example.com/base:1';
const RUN = '[2/3] RUN make all';
const COPY = '[3/3] COPY out /srv';

function render(columns = 80): { tty: FakeTty; p: TtyProgress } {
  clock = T0;
  const tty = new FakeTty(columns);
  return { tty, p: new TtyProgress(tty, { now: () => clock, intervalMs: 0, tailLines: 3 }) };
}

describe('tty progress', () => {
  test('a running step shows its elapsed time and the last lines of its output', () => {
    const { tty, p } = render();
    try {
      p.event(ev('started', 'a', FROM, 0));
      p.event(ev('cached', 'a', FROM, 10));
      p.event(ev('started', 'b', RUN, 100));
      for (let i = 1; i <= 5; i++) p.event(logEv('b', RUN, 200 + i, `compiling unit ${i}\n`));
      clock = T0 + 2600;
      p.event(logEv('b', RUN, 2600, 'linking'));
      const screen = tty.screen();
      assert.deepEqual(screen, [
        ` => CACHED ${FROM}`.padEnd(75) + '0.0s',
        '[+] Building 2.6s (1/2)',
        ` => ${RUN}`.padEnd(75) + '2.5s',
        ' => => # compiling unit 4',
        ' => => # compiling unit 5',
        ' => => # linking',
      ]);
    } finally {
      p.close();
    }
  });

  test('finished steps are printed once, with time, CACHED marks and their layer; the last frame has no live block', () => {
    const { tty, p } = render();
    p.event(ev('started', 'a', FROM, 0));
    p.event(ev('cached', 'a', FROM, 10));
    p.event(ev('started', 'b', RUN, 100));
    p.event(logEv('b', RUN, 150, 'ok\n'));
    const digest = `sha256:${'ab'.repeat(32)}`;
    const layer = { digest, size: 2_500_000, uuid: 'U', parentUuid: 'P', diffId: digest };
    p.layer(vertex('b', RUN), { layer, stats: { writtenBytes: 3_000_000, identicalBytes: 500_000, zeroedBytes: 0, zeroedDroppedBytes: 0 } });
    p.event(ev('completed', 'b', RUN, 1600));
    p.event(ev('started', 'c', COPY, 1600));
    clock = T0 + 1800;
    p.event(ev('completed', 'c', COPY, 1800));
    clock = T0 + 2000;
    p.close(false);
    const screen = tty.screen();
    assert.deepEqual(screen, [
      ` => CACHED ${FROM}`.padEnd(75) + '0.0s',
      ` => ${RUN}`.padEnd(75) + '1.5s',
      ` => => layer ${digest} 2.50MB (dropped 500kB unchanged of 3.00MB written, 0B of 0B discards over nothing)`.slice(0, 78) + '…',
      ` => ${COPY}`.padEnd(75) + '0.2s',
      '[+] Building 2.0s (3/3) FINISHED',
    ]);
    assert.equal(p.ran.size, 2);
    assert.equal(p.cached.size, 1);
    // Each finished step went out exactly once, however many frames were drawn.
    const all = tty.chunks.join('');
    assert.equal(all.split(` => ${RUN}`.padEnd(75) + '1.5s').length - 1, 1);
    assert.equal(all.split(` => CACHED ${FROM}`).length - 1, 1);
  });

  test('a failure prints the failing step with its output, then the full plain log', () => {
    const { tty, p } = render();
    p.event(ev('started', 'b', RUN, 0));
    for (let i = 1; i <= 8; i++) p.event(logEv('b', RUN, 100 * i, `line ${i}\n`));
    p.event(errEv('b', RUN, 1000, 'process "/bin/sh -c make all" did not complete successfully: exit code: 2'));
    p.message('WARNING: something to note\n');
    p.close(true);
    const screen = tty.screen();
    const logAt = screen.indexOf('------ build log ------');
    assert.ok(logAt > 0, screen.join('\n'));
    const frame = screen.slice(0, logAt);
    assert.ok(frame.includes(` => ERROR ${RUN}`.padEnd(75) + '1.0s'), frame.join('\n'));
    assert.ok(frame.includes(' => => # line 8'));
    assert.ok(!frame.includes(' => => # line 1'), 'only the tail above the log');
    assert.ok(frame.includes('WARNING: something to note'));
    const plain = screen.slice(logAt + 1);
    assert.equal(plain[0], `#1 ${RUN}`);
    for (let i = 1; i <= 8; i++) assert.ok(plain.includes(`#1 ${(i / 10).toFixed(3)} line ${i}`), plain.join('\n'));
    assert.equal(plain.at(-2), '#1 ERROR: process "/bin/sh -c make all" did not complete successfully: exit code: 2');
    assert.equal(plain.at(-1), 'WARNING: something to note');
  });

  test('lines are cut to the terminal width', () => {
    const { tty, p } = render(40);
    p.event(ev('started', 'b', RUN, 0));
    p.event(logEv('b', RUN, 10, `${'x'.repeat(100)}\n`));
    clock = T0 + 500;
    p.event(logEv('b', RUN, 500, 'y\n'));
    for (const l of tty.screen()) assert.ok(l.length <= 39, l);
    assert.ok(tty.screen().includes(` => => # ${'x'.repeat(29)}…`));
    p.close();
  });

  test('auto is tty only on a terminal; plain is always plain', () => {
    const term = new FakeTty(80);
    const pipe = Object.assign(new FakeTty(80), { isTTY: false });
    assert.equal(wantsTty('auto', term), true);
    assert.equal(wantsTty('auto', pipe), false);
    assert.equal(wantsTty('plain', term), false);
    assert.equal(wantsTty('tty', term), true);
    assert.equal(wantsTty('auto', undefined), false);
    const lines: string[] = [];
    const plain = makeProgress('auto', (s) => lines.push(s), pipe);
    assert.ok(plain instanceof PlainProgress);
    plain.event(ev('started', 'a', FROM, 0));
    plain.close();
    assert.deepEqual(lines, [`#1 ${FROM}\n`]);
    const tty = makeProgress('auto', () => assert.fail('no plain lines on a terminal'), term);
    assert.ok(tty instanceof TtyProgress);
    tty.close();
  });
});
