/** @type {import('jest').Config} */
module.exports = {
  // Node's, and the client suites fail on a MaxListenersExceededWarning (see the file).
  testEnvironment: '<rootDir>/test/helpers/listener-leak-environment.js',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  transform: {
    '^.+\\.lua$': '<rootDir>/test/helpers/lua-transform.js',
    '^.+\\.ts$': ['ts-jest', { tsconfig: { module: 'commonjs', moduleResolution: 'node', target: 'ES2022', esModuleInterop: true, isolatedModules: true, experimentalDecorators: true, emitDecoratorMetadata: true, types: ['node', 'jest'] }, diagnostics: false }],
  },
  moduleFileExtensions: ['ts', 'js', 'json', 'lua'],
  reporters: ['default', '<rootDir>/test/helpers/summary-reporter.js'],
  testTimeout: 30000,
  // Tests start child processes and redis-servers; never let a straggling handle hold CI past the summary.
  forceExit: true,
};
