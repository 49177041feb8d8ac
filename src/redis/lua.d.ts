/** Lua scripts are bundled as text (tsup `loader: { '.lua': 'text' }`; jest: test/helpers/lua-transform.js). */
declare module '*.lua' {
  const source: string;
  export default source;
}
