/**
 * Type-checks the ```ts blocks of markdown files the way a user's fresh
 * project would compile them: strict, module/moduleResolution NodeNext, each
 * block once as a CommonJS file (a default `npm init` project) and once as
 * an ES module, `bidiweb` and `bidiweb/*` mapped to this repository's src
 * (so no build is needed first), everything else from node_modules.
 *
 * A block whose first line is a `// name.ts` comment is written under that
 * name, so a later block can import it (`./app.module.js`). A block that is
 * deliberately a fragment opts out with the line
 * `<!-- typecheck: skip (why) -->` right above its fence.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import ts from 'typescript';

export const REPO = path.resolve(__dirname, '..', '..');

export interface Block {
  /** `README.md:42` (the fence's line). */
  where: string;
  code: string;
  /** The reason given by the opt-out marker, if any. */
  skip?: string;
  /** File name from a leading `// name.ts` comment. */
  name?: string;
}

const SKIP = /^\s*<!--\s*typecheck:\s*skip\s*\((.+)\)\s*-->\s*$/;

export function extractBlocks(markdown: string, file: string): Block[] {
  const lines = markdown.split('\n');
  const blocks: Block[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^(\s*)```(\S*)\s*$/.exec(lines[i]!);
    if (!open) continue;
    const indent = open[1]!.length;
    const lang = open[2]!;
    let end = i + 1;
    while (end < lines.length && !/^\s*```\s*$/.test(lines[end]!)) end++;
    if (lang === 'ts' || lang === 'typescript') {
      const code = lines
        .slice(i + 1, end)
        .map((l) => l.slice(Math.min(indent, l.length - l.trimStart().length)))
        .join('\n');
      const marker = i > 0 ? SKIP.exec(lines[i - 1]!) : null;
      const name = /^\/\/ ([\w.-]+\.ts)\s*$/.exec(code.split('\n')[0] ?? '')?.[1];
      blocks.push({ where: `${file}:${i + 1}`, code, ...(marker ? { skip: marker[1] } : {}), ...(name ? { name } : {}) });
    }
    i = end;
  }
  return blocks;
}

/** Every ```ts block of README.md and docs/*.md. */
export function repoBlocks(): Block[] {
  const files = ['README.md', ...ts.sys.readDirectory(path.join(REPO, 'docs'), ['.md'], undefined, undefined, 1).map((f) => path.relative(REPO, f))];
  return files.flatMap((f) => extractBlocks(readFileSync(path.join(REPO, f), 'utf8'), f.split(path.sep).join('/')));
}

export interface Problem {
  where: string;
  mode: 'cjs' | 'esm';
  message: string;
}

const ENTRIES = ['express', 'koa', 'nest', 'node', 'ws', 'redis', 'client', 'aws-lambda', 'testing'];

/**
 * Compiles every block not skipped; returns one problem per diagnostic, by
 * block (`README.md:42 (cjs) line 3: …`). Blocks of one markdown file share
 * a directory, so named blocks can import each other.
 */
export function checkBlocks(blocks: Block[]): Problem[] {
  // Inside node_modules/ so peers (express, @nestjs/*, ioredis) resolve from the repository's node_modules.
  const cache = path.join(REPO, 'node_modules', '.cache');
  mkdirSync(cache, { recursive: true });
  const dir = mkdtempSync(path.join(cache, 'docs-blocks-'));
  try {
    const files = new Map<string, { block: Block; mode: 'cjs' | 'esm' }>();
    for (const mode of ['cjs', 'esm'] as const) {
      const modeDir = path.join(dir, mode);
      mkdirSync(modeDir);
      writeFileSync(path.join(modeDir, 'package.json'), JSON.stringify({ type: mode === 'esm' ? 'module' : 'commonjs' }));
      blocks.forEach((block, n) => {
        if (block.skip !== undefined) return;
        const sub = path.join(modeDir, block.where.split(':')[0]!.replace(/[^\w]/g, '_'));
        mkdirSync(sub, { recursive: true });
        const file = path.join(sub, block.name ?? `block-${n}.ts`);
        writeFileSync(file, block.code);
        files.set(path.resolve(file), { block, mode });
      });
    }
    const paths: Record<string, string[]> = { bidiweb: [path.join(REPO, 'src', 'index.ts')] };
    for (const e of ENTRIES) paths[`bidiweb/${e}`] = [path.join(REPO, 'src', e, 'index.ts')];
    const program = ts.createProgram([...files.keys()], {
      strict: true,
      module: ts.ModuleKind.NodeNext,
      moduleResolution: ts.ModuleResolutionKind.NodeNext,
      target: ts.ScriptTarget.ES2022,
      lib: ['lib.es2022.d.ts', 'lib.dom.d.ts'],
      types: ['node'],
      typeRoots: [path.join(REPO, 'node_modules', '@types')],
      experimentalDecorators: true, // as in every Nest project; no emitDecoratorMetadata
      esModuleInterop: true,
      skipLibCheck: true,
      noEmit: true,
      paths,
    });
    const problems: Problem[] = [];
    for (const sf of program.getSourceFiles()) {
      const owner = files.get(path.resolve(sf.fileName));
      if (!owner) continue;
      for (const p of wideStrings(sf)) problems.push({ where: owner.block.where, mode: owner.mode, message: p });
      for (const d of [...program.getSyntacticDiagnostics(sf), ...program.getSemanticDiagnostics(sf)]) {
        const line = d.start === undefined ? '?' : sf.getLineAndCharacterOfPosition(d.start).line + 1;
        problems.push({ where: owner.block.where, mode: owner.mode, message: `line ${line}: TS${d.code} ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}` });
      }
    }
    return problems;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * String literals with a character above U+00FF: a header value made of one
 * (`'Bearer …'`) makes fetch throw, so examples keep their strings Latin-1.
 */
function wideStrings(sf: ts.SourceFile): string[] {
  const out: string[] = [];
  const visit = (node: ts.Node): void => {
    if (ts.isStringLiteral(node) || ts.isNoSubstitutionTemplateLiteral(node) || ts.isTemplateHead(node) || ts.isTemplateMiddle(node) || ts.isTemplateTail(node)) {
      const wide = [...node.text].find((c) => c.codePointAt(0)! > 0xff);
      if (wide) {
        const line = sf.getLineAndCharacterOfPosition(node.getStart(sf)).line + 1;
        const code = wide.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0');
        out.push(`line ${line}: string literal with U+${code} (${wide}): as a header value it makes fetch throw; keep example strings Latin-1`);
      }
    }
    ts.forEachChild(node, visit);
  };
  visit(sf);
  return out;
}
