// Line-level parsing: logical lines, flags, heredoc bodies, doc comments, directives and argument forms.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { parseDockerfile, parseNameVal, parseWords, parseJsonArray, parseHeredocWord } from '../../frontend/instructions.js';

const summary = (text: string) =>
  parseDockerfile(text).instructions.map((i) => ({
    k: i.keyword,
    lines: [i.line, i.endLine],
    flags: i.flags.map((f) => `${f.name}=${f.value}`),
    rest: i.rest,
    ...(i.heredocs.length ? { heredocs: i.heredocs.map((h) => [h.name, h.content, h.chomp, h.expand]) } : {}),
    ...(i.comments.length ? { comments: i.comments } : {}),
  }));

describe('parseDockerfile', () => {
  test('lower-case keywords, CRLF, continuation keeps the next line’s indentation, blank and comment lines inside', () => {
    assert.deepEqual(summary('from alpine\r\n  run echo a \\\r\n\r\n   # c\r\n   b\r\ncopy . /\r\n'), [
      { k: 'FROM', lines: [1, 1], flags: [], rest: 'alpine' },
      { k: 'RUN', lines: [2, 5], flags: [], rest: 'echo a    b' },
      { k: 'COPY', lines: [6, 6], flags: [], rest: '. /' },
    ]);
    const run = parseDockerfile('FROM a\nRUN x \\\n\n  y\n').instructions[1]!;
    assert.equal(run.emptyContinuationLine, 4);
    assert.equal(run.rawKeyword, 'RUN');
  });

  test('flags: quotes removed, `--` ends them, bare flags have no value', () => {
    assert.deepEqual(summary('FROM a\nRUN --mount="type=bind,target=/x" --network=none -- --not-a-flag\nCOPY --link --chown=a:b x y\n').slice(1), [
      { k: 'RUN', lines: [2, 2], flags: ['mount=type=bind,target=/x', 'network=none'], rest: '--not-a-flag' },
      { k: 'COPY', lines: [3, 3], flags: ['link=null', 'chown=a:b'], rest: 'x y' },
    ]);
  });

  test('heredocs: several per line, <<- strips tabs from the terminator, quoted names do not expand', () => {
    const r = summary('FROM a\nCOPY <<one <<"two" /\n1\none\n2\ntwo\nRUN <<-EOT bash\n\techo x\n\tEOT\nRUN next\n');
    assert.deepEqual(r[1], { k: 'COPY', lines: [2, 6], flags: [], rest: '<<one <<"two" /', heredocs: [['one', '1\n', false, true], ['two', '2\n', false, false]] });
    assert.deepEqual(r[2], { k: 'RUN', lines: [7, 9], flags: [], rest: '<<-EOT bash', heredocs: [['EOT', '\techo x\n', true, true]] });
    assert.deepEqual(r[3], { k: 'RUN', lines: [10, 10], flags: [], rest: 'next' });
  });

  test('a quoted "<<word" is not a heredoc', () => {
    const [, run] = summary('FROM a\nRUN echo "<<no" && cat <<\'EOF\'\n$HOME\nEOF\n');
    assert.deepEqual(run!.heredocs, [['EOF', '$HOME\n', false, false]]);
  });

  test('doc comments: consecutive comment lines above, reset by an empty `#`, directives excluded', () => {
    const r = summary('# syntax=docker/dockerfile:1\n# escape=\\\n# one\n#\n# two\n\n# three\nFROM a\n# inner\nARG X\n');
    assert.deepEqual(r[0]!.comments, ['two', 'three']);
    assert.deepEqual(r[1]!.comments, ['inner']);
    const df = parseDockerfile('# syntax=docker/dockerfile:1.7\nFROM a\n');
    assert.equal(df.syntax, 'docker/dockerfile:1.7');
  });

  test('errors carry file and line', () => {
    assert.throws(() => parseDockerfile('FROM a\nBOGUS x\n', 'ctx/Dockerfile.dev'), /ctx\/Dockerfile.dev:2: unknown instruction: BOGUS/);
    assert.throws(() => parseDockerfile('FROM a\nCOPY <<EOF /x\nno end\n'), /Dockerfile:2: unterminated heredoc/);
    assert.throws(() => parseDockerfile('\n\n# nothing\n'), /file with no instructions/);
  });
});

describe('argument forms', () => {
  test('parseWords keeps quotes and escapes for the expansion step', () => {
    assert.deepEqual(parseWords(`a "b c" 'd e' f\\ g "" x=`, '\\'), ['a', '"b c"', "'d e'", 'f\\ g', '""', 'x=']);
  });

  test('parseNameVal: k=v pairs and the legacy "key rest of line" form', () => {
    assert.deepEqual(parseNameVal('A=1 B="x y"', '\\', 'ENV'), [
      { key: 'A', value: '1', legacy: false },
      { key: 'B', value: '"x y"', legacy: false },
    ]);
    assert.deepEqual(parseNameVal('KEY some  value', '\\', 'ENV'), [{ key: 'KEY', value: 'some  value', legacy: true }]);
    assert.throws(() => parseNameVal('A=1 B', '\\', 'ENV'), /can't find = in "B"/);
    assert.throws(() => parseNameVal('ONLY', '\\', 'ENV'), /ENV must have two arguments/);
  });

  test('parseJsonArray: JSON string arrays only', () => {
    assert.deepEqual(parseJsonArray(' ["a", "b c"]'), ['a', 'b c']);
    assert.equal(parseJsonArray('[not json'), null);
    assert.equal(parseJsonArray('echo [x]'), null);
    assert.throws(() => parseJsonArray('["a", 1]'), /arrays must be comprised of strings only/);
  });

  test('parseHeredocWord', () => {
    assert.deepEqual(parseHeredocWord('<<EOF'), { name: 'EOF', chomp: false, expand: true });
    assert.deepEqual(parseHeredocWord('<<-"EOF"'), { name: 'EOF', chomp: true, expand: false });
    assert.deepEqual(parseHeredocWord('3<<X'), { name: 'X', chomp: false, expand: true });
    assert.equal(parseHeredocWord('<<'), null);
    assert.equal(parseHeredocWord('a<<b'), null);
  });
});
