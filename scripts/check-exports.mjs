// After `npm run build`: every subpath loads from dist in both module systems.
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const checks = {
  bidiweb: ['createBidiServer', 'MemoryStore', 'BidiError', 'toFetchHandler', 'reject'],
  'bidiweb/express': ['bidiWeb'],
  'bidiweb/koa': ['bidiWeb'],
  'bidiweb/nest': ['BidiWebModule', 'OnMessage', 'BidiWebService'],
  'bidiweb/redis': ['RedisStore'],
  'bidiweb/node': ['createNodeHandler'],
  'bidiweb/ws': ['attach'],
  'bidiweb/client': ['open'],
  'bidiweb/aws-lambda': ['bidiLambda', 'lambdaEventToBidi', 'createBidiServer'],
  'bidiweb/testing': ['runStoreContract'],
};
let failed = 0;
for (const [spec, names] of Object.entries(checks)) {
  const esm = await import(spec);
  const cjs = require(spec);
  for (const name of names) {
    for (const [kind, mod] of [['esm', esm], ['cjs', cjs]]) {
      if (mod[name] === undefined) {
        console.error(`${spec} (${kind}) does not export ${name}`);
        failed++;
      }
    }
  }
}
// The browser build is exported too (`bidiweb/browser/*`).
const browser = await import('bidiweb/browser/bidiweb.esm.js');
if (typeof browser.open !== 'function') {
  console.error('bidiweb/browser/bidiweb.esm.js does not export open');
  failed++;
}
if (failed) process.exit(1);
console.log('exports load in ESM and CJS (and bidiweb/browser/bidiweb.esm.js)');
