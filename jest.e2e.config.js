/**
 * Browser end-to-end tests (test/e2e/*.e2e.ts): real Chromium driven by
 * playwright-core, against real server processes. Needs /usr/bin/chromium
 * (Debian: `apt-get install -y chromium`; or set CHROMIUM_PATH) and
 * redis-server on PATH. Never downloads a browser.
 *
 *   npm run test:e2e      (jest -c jest.e2e.config.js --runInBand)
 */
const base = require('./jest.config.js');

/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.e2e.ts'],
  transform: base.transform,
  moduleFileExtensions: base.moduleFileExtensions,
  reporters: ['default', '<rootDir>/test/helpers/summary-reporter.js'],
  testTimeout: 90_000,
};
