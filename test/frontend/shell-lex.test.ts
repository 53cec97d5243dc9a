// Expansion rule tables for the Dockerfile lexer: quoting, escapes, every ${} modifier, positional and
// special parameters, word splitting after expansion, and the raw modes used for display and heredocs.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { ShellLex, envMap } from '../../frontend/shell-lex.js';

const env = envMap(['PWD=/home', 'SHELL=bash', 'KOREAN=한국어', 'NULL=', 'V=abc.tar.gz', 'P=/usr/local/bin']);
const ERR = Symbol('error');

// [input, expected] with the environment above; ERR when BuildKit reports an error.
const WORD_CASES: [string, string | typeof ERR][] = [
  ['hello', 'hello'],
  ["he'll'o", 'hello'],
  ["he'llo", ERR],
  ["he\\'llo", "he'llo"],
  ["he\\\\'llo", ERR],
  ['abc\\tdef', 'abctdef'],
  ['"abc\\tdef"', 'abc\\tdef'],
  ['"abc\\\\tdef"', 'abc\\tdef'],
  ["'abc\\tdef'", 'abc\\tdef'],
  ['hello\\', 'hello'],
  ['hello\\\\', 'hello\\'],
  ['"hello', ERR],
  ['"hello\\"', ERR],
  ['"hel\'lo"', "hel'lo"],
  ["'hello\\'", 'hello\\'],
  ['"\'\'"', "''"],
  ['$.', '$.'],
  ['he$1x', 'hex'],
  ['he$PWD', 'he/home'],
  ['he\\$PWD', 'he$PWD'],
  ['he\\\\$PWD', 'he\\/home'],
  ['"he\\$PWD"', 'he$PWD'],
  ["'he\\$PWD'", 'he\\$PWD'],
  ['\\${}', '${}'],
  ['${}', ERR],
  ['he${hi}xx', 'hexx'],
  ['he${PWD}', 'he/home'],
  ['he${.}', ERR],
  ['he${XXX:-000}xx', 'he000xx'],
  ['he${PWD:-000}xx', 'he/homexx'],
  ['he${XXX:-${PWD:-yyy}}xx', 'he/homexx'],
  ['he${XXX:-${YYY:-yyy}}xx', 'heyyyxx'],
  ['he${XXX:YYY}', ERR],
  ['he${XXX?}', ERR],
  ['he${XXX:?}', ERR],
  ['he${PWD?}', 'he/home'],
  ['he${NULL?}', 'he'],
  ['he${NULL:?}', ERR],
  ['he${NULL-x}', 'he'],
  ['he${NULL:-x}', 'hex'],
  ['he${NULL+x}', 'hex'],
  ['he${NULL:+x}', 'he'],
  ['he${XXX-x}', 'hex'],
  ['he${XXX+x}', 'he'],
  ['he${PWD:+${SHELL}}xx', 'hebashxx'],
  ['he${XXX:+000}xx', 'hexx'],
  ["'he${XX}'", 'he${XX}'],
  ['"he\'$PWD\'"', "he'/home'"],
  ["'\"hello\"'", '"hello"'],
  ['he${PWD', ERR],
  ['he${PWD:=000}xx', ERR],
  ['he${PWD:+${PWD}:}xx', 'he/home:xx'],
  ['he${XXX:-\\$PWD:}xx', 'he$PWD:xx'],
  ['he${XXX:-\\${PWD}z}xx', 'he${PWDz}xx'],
  ['안\'녕\'하세요', '안녕하세요'],
  ['안녕$KOREAN', '안녕한국어'],
  ['${aaa}}', '}'],
  ['${aaa:-bbb}}', 'bbb}'],
  ['${aaa:-bbb {foo}', 'bbb {foo'],
  ['${aaa:-bbb ${foo}', ERR],
  ['${:-bbb}', ERR],
  ['${1:-bbb}', 'bbb'],
  ['$999aaa', 'aaa'],
  ['${001:-bbb}aaa', 'bbbaaa'],
  ['$@@@', '@@'],
  ['${#:-bbb}', 'bbb'],
  ['$$', ''],
  // pattern removal and substitution
  ['${V%.*}', 'abc.tar'],
  ['${V%%.*}', 'abc'],
  ['${V#*.}', 'tar.gz'],
  ['${V##*.}', 'gz'],
  ['${V%.zip}', 'abc.tar.gz'],
  ['${P#/usr}', '/local/bin'],
  ['${V/./-}', 'abc-tar.gz'],
  ['${V//./-}', 'abc-tar-gz'],
  ['${V/a?c/x}', 'x.tar.gz'],
  ['${XXX/a/b}', ''],
  ['${V#\\*}', 'abc.tar.gz'],
];

describe('shell lexer: single-word expansion', () => {
  const lex = new ShellLex('\\');
  for (const [input, want] of WORD_CASES) {
    test(`${input} -> ${want === ERR ? 'error' : JSON.stringify(want)}`, () => {
      if (want === ERR) assert.throws(() => lex.processWord(input, env));
      else assert.equal(lex.processWord(input, env), want);
    });
  }
});

describe('shell lexer: words after expansion', () => {
  const wenv = envMap(['hi=hi', 'space=abc  def', 'leading=  ab c', 'trailing=ab c   ']);
  const cases: [string, string[] | typeof ERR][] = [
    ['hello${hi}bye', ['hellohibye']],
    ['hello${space}bye', ['helloabc', 'defbye']],
    ['hello"${space}"bye', ['helloabc  defbye']],
    ['hello "${space}"bye', ['hello', 'abc  defbye']],
    ['hello${leading}def', ['hello', 'ab', 'cdef']],
    ['hello${trailing}d', ['helloab', 'c', 'd']],
    ['hello" there  "', ['hello there  ']],
    ['hello there     ', ['hello', 'there']],
    ['hello\\ there', ['hello there']],
    ['hello" there', ERR],
    ['hello\\" there', ['hello"', 'there']],
    ["hello'$there'", ['hello$there']],
    ['8080 ${nope} 9090', ['8080', '9090']],
  ];
  const lex = new ShellLex('\\');
  for (const [input, want] of cases) {
    test(`${input} -> ${want === ERR ? 'error' : JSON.stringify(want)}`, () => {
      if (want === ERR) assert.throws(() => lex.processWords(input, wenv));
      else assert.deepEqual(lex.processWords(input, wenv), want);
    });
  }
});

describe('shell lexer: modes', () => {
  test('backtick escape token (# escape=`)', () => {
    const lex = new ShellLex('`');
    assert.equal(lex.processWord('C:\\path`$PWD', env), 'C:\\path$PWD');
    assert.equal(lex.processWord('"a`"b"', env), 'a"b');
  });
  test('rawQuotes + skipUnsetEnv keep text for display names', () => {
    const lex = new ShellLex('\\');
    assert.equal(lex.processWord(`RUN echo "$PWD" '$X' $UNSET \${UNSET:-d}`, env, { rawQuotes: true, skipUnsetEnv: true }), `RUN echo "/home" '$X' $UNSET \${UNSET:-d}`);
  });
  test('skipProcessQuotes leaves quotes in heredoc bodies', () => {
    const lex = new ShellLex('\\');
    assert.equal(lex.processWord(`echo "$SHELL" 'x'\n`, env, { skipProcessQuotes: true }), `echo "bash" 'x'\n`);
  });
  test('matched and unmatched variables are reported', () => {
    const r = new ShellLex('\\').process('$PWD ${NOPE:-x} $SHELL', env);
    assert.deepEqual([...r.matched].sort(), ['PWD', 'SHELL']);
    assert.deepEqual([...r.unmatched], ['NOPE']);
  });
});
