/**
 * Every ```ts block of README.md and docs/*.md compiles as pasted into a
 * fresh project (strict, NodeNext, CommonJS and ESM) against bidiweb's own
 * types. Blocks marked `<!-- typecheck: skip (why) -->` are listed, not checked.
 */
import { checkBlocks, extractBlocks, repoBlocks } from './code-blocks';

jest.setTimeout(120_000);

const blocks = repoBlocks();

it('finds the blocks, and lists the ones that opt out', () => {
  expect(blocks.filter((b) => b.where.startsWith('README.md')).length).toBeGreaterThanOrEqual(6);
  const skipped = blocks.filter((b) => b.skip !== undefined);
  if (skipped.length > 0) console.log(`not type-checked (opt-out marker):\n${skipped.map((b) => `  ${b.where}: ${b.skip}`).join('\n')}`);
  // An opt-out needs a reason.
  for (const b of skipped) expect(b.skip!.trim().length).toBeGreaterThan(0);
});

it('every README.md and docs/*.md TypeScript block compiles (strict, NodeNext, as CommonJS and as ESM)', () => {
  const problems = checkBlocks(blocks);
  expect(problems.map((p) => `${p.where} (${p.mode}) ${p.message}`)).toEqual([]);
});

it('fails on a broken block: top-level await in CommonJS, an undefined name, a default import of ioredis, non-ASCII in a header', () => {
  const md = [
    '```ts',
    "import { open } from 'bidiweb/client';",
    "const s = open('http://localhost:3000/session');",
    'await s.send({ text: 1 });',
    '```',
    '',
    '```ts',
    "import { bidiWeb } from 'bidiweb/express';",
    'bidiWeb({}).hub.send(sid, {});',
    '```',
    '',
    '```ts',
    "import Redis from 'ioredis';",
    'new Redis();',
    '```',
    '',
    '```ts',
    "import { open } from 'bidiweb/client';",
    "open('http://localhost:3000/session', { headers: { authorization: 'Bearer \u2026' } });",
    '```',
    '',
    '<!-- typecheck: skip (a fragment) -->',
    '```ts',
    'this does not parse',
    '```',
  ].join('\n');
  const found = extractBlocks(md, 'BROKEN.md');
  expect(found.map((b) => [b.where, b.skip])).toEqual([
    ['BROKEN.md:1', undefined],
    ['BROKEN.md:7', undefined],
    ['BROKEN.md:12', undefined],
    ['BROKEN.md:17', undefined],
    ['BROKEN.md:23', 'a fragment'],
  ]);
  const problems = checkBlocks(found).map((p) => `${p.where} (${p.mode}) ${p.message}`);
  expect(problems).toEqual(
    expect.arrayContaining([
      expect.stringMatching(/^BROKEN\.md:1 \(cjs\) line 3: TS1309 .*cannot use 'await' at the top level/),
      expect.stringMatching(/^BROKEN\.md:7 \(cjs\) line 2: TS2304 Cannot find name 'sid'/),
      expect.stringMatching(/^BROKEN\.md:12 \(esm\) line 2: TS2351 .*not constructable/),
      expect.stringMatching(/^BROKEN\.md:17 \(cjs\) line 2: string literal with U\+2026/),
    ]),
  );
  expect(problems.some((p) => p.startsWith('BROKEN.md:23'))).toBe(false);
});
