// .dockerignore reading and matching with Docker's semantics.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { cleanPath, parseDockerignore, PatternMatcher } from '../../frontend/dockerignore.js';

const fixtures = fileURLToPath(new URL('../../../testdata/dockerfiles/', import.meta.url));

describe('parseDockerignore', () => {
  test('comments at column 0 only, whitespace trimmed, paths cleaned, leading slash dropped', () => {
    const text = '\uFEFF# comment\r\n*.log\r\n!keep.log\n\n  /tmp/  \n ./a/../b//c/ \n #not-a-comment\n! spaced\n/\n';
    assert.deepEqual(parseDockerignore(text), ['*.log', '!keep.log', 'tmp', 'b/c', '#not-a-comment', '!spaced', '/']);
  });

  test('the fixture file parses to the expected list', () => {
    const pats = parseDockerignore(readFileSync(fixtures + 'app.dockerignore', 'utf8'));
    assert.deepEqual(pats, ['.git', 'node_modules', '**/*.md', '!README.md', 'build/**', 'tmp?', '*.log', '!important.log']);
  });
});

describe('PatternMatcher', () => {
  const cases: [string[], string, boolean][] = [
    [['*.md'], 'README.md', true],
    [['*.md'], 'docs/a.md', false],
    [['**/*.md'], 'docs/deep/a.md', true],
    [['**/*.md'], 'a.md', true],
    [['**/foo'], 'foo', true],
    [['**/foo'], 'x/y/foo', true],
    [['**/foo'], 'x/foo/bar', true],
    [['docs'], 'docs/x/y', true],
    [['docs'], 'docsx', false],
    [['docs', '!docs/keep.txt'], 'docs/keep.txt', false],
    [['docs', '!docs/keep.txt'], 'docs/other.txt', true],
    [['*', '!src'], 'src/x.ts', false],
    [['*', '!src'], 'other/x.ts', true],
    [['!src', '*'], 'src/x.ts', true],
    [['a?c'], 'abc', true],
    [['a?c'], 'a/c', false],
    [['[a-c]x'], 'bx', true],
    [['[a-c]x'], 'dx', false],
    [['node_modules/**'], 'node_modules/x/y', true],
    [['node_modules/**'], 'node_modules', false],
    [['**'], 'anything/at/all', true],
    [['a/**/b'], 'a/b', true],
    [['a/**/b'], 'a/x/y/b', true],
    [['a/**/b'], 'a/x/y/c', false],
    [['a\\*b'], 'a*b', true],
    [['a\\*b'], 'axb', false],
    [['dir/*.txt'], 'dir/a.txt', true],
    [['dir/*.txt'], 'dir/sub/a.txt', false],
    [['./x/../y'], 'y/z', true],
    [['file.(1)'], 'file.(1)', true],
    [['*.log', '!important.log'], 'important.log', false],
    [['*.log', '!important.log'], 'debug.log', true],
  ];
  for (const [pats, file, want] of cases) {
    test(`${JSON.stringify(pats)} ${want ? 'excludes' : 'keeps'} ${file}`, () => {
      assert.equal(new PatternMatcher(pats).matches(file), want);
    });
  }

  test('the context root is never excluded', () => {
    assert.equal(new PatternMatcher(['*', '.']).matches('.'), false);
  });

  test('a lone "!" is an error', () => {
    assert.throws(() => new PatternMatcher(['!']), /illegal exclusion pattern/);
  });

  test('hasExclusions reports `!` patterns', () => {
    assert.equal(new PatternMatcher(['a', '!b']).hasExclusions, true);
    assert.equal(new PatternMatcher(['a']).hasExclusions, false);
  });
});

describe('cleanPath', () => {
  const cases: [string, string][] = [
    ['', '.'],
    ['a//b/./c/', 'a/b/c'],
    ['a/../../b', '../b'],
    ['/../a', '/a'],
    ['/', '/'],
    ['./', '.'],
  ];
  for (const [i, o] of cases) test(`${JSON.stringify(i)} -> ${o}`, () => assert.equal(cleanPath(i), o));
});
