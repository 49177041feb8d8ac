/**
 * `GET /bidiweb.js` for the sample pages: the client library (src/client)
 * bundled with esbuild as an IIFE that defines `window.bidiweb` — the same
 * shape as `dist/browser/bidiweb.min.js` from `npm run build:client`, built
 * from source so the sample always serves the current client.
 */
import path from 'node:path';
import { buildSync } from 'esbuild';

/** The repository root, when this file runs from source (bundles pass theirs explicitly). */
export const REPO_ROOT = path.join(__dirname, '..', '..');

export function buildClientBundle(root = REPO_ROOT): string {
  const out = buildSync({
    entryPoints: [path.join(root, 'src', 'client', 'index.ts')],
    bundle: true,
    format: 'iife',
    globalName: 'bidiweb',
    platform: 'browser',
    target: 'es2020',
    write: false,
    logLevel: 'silent',
    legalComments: 'none',
  });
  return out.outputFiles[0]!.text;
}

/**
 * The bundle, built on first use; if the build fails it is retried on the
 * next call. `get()` returns the code or throws the build error.
 */
export function lazyClientBundle(root: string, log: (line: string) => void): { get(): string } {
  let code: string | undefined;
  try {
    code = buildClientBundle(root);
  } catch (err) {
    log(`[chat] client bundle not built yet: ${err instanceof Error ? err.message.split('\n')[0] : String(err)}`);
  }
  return {
    get() {
      if (code === undefined) code = buildClientBundle(root);
      return code;
    },
  };
}
