// Jest transform: a .lua import becomes its text, as the tsup text loader does in the build.
module.exports = {
  process(source) {
    return { code: `module.exports = ${JSON.stringify(source)};` };
  },
};
