// The esbuild options for running the TypeScript sources under plain node:
// bundled (the Lua scripts as text, as the package build does; tsx cannot
// load them), npm packages external (resolved from node_modules at run time,
// so the output must live inside the project), inline source maps.
export const NODE_BUNDLE = {
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  packages: 'external',
  loader: { '.lua': 'text' },
  sourcemap: 'inline',
  logLevel: 'error',
};
