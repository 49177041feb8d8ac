/**
 * The jest environment of every suite (jest.config.js): Node's, plus, for the
 * client suites (LEAK_CHECKED below), a failure on any
 * `MaxListenersExceededWarning` — the sign of a listener added per request to
 * a long-lived AbortSignal (or emitter) and left there. A setup file cannot do
 * this: the `process` a test sees is a copy, and Node emits warnings on the
 * real one, which only the environment (outside the test's context) reaches.
 *
 * A warning fails the test during which it came; one that comes after the
 * last test fails the suite.
 */
const { TestEnvironment } = require('jest-environment-node');

/** Suites that run the client: a leak warning fails them. */
const LEAK_CHECKED = [/[\\/]test[\\/]client[\\/]/, /[\\/]test[\\/]protocol[\\/]stream\.test\.ts$/];

class ListenerLeakEnvironment extends TestEnvironment {
  constructor(config, context) {
    super(config, context);
    this.checked = LEAK_CHECKED.some((re) => re.test(context.testPath));
    /** Warnings not yet reported. */
    this.warnings = [];
    this.onWarning = (warning) => {
      if (warning && warning.name === 'MaxListenersExceededWarning') this.warnings.push(warning);
    };
  }

  async setup() {
    await super.setup();
    if (this.checked) process.on('warning', this.onWarning);
  }

  async teardown() {
    process.off('warning', this.onWarning);
    await super.teardown();
  }

  /** Errors for the warnings seen so far (each reported once). */
  takeErrors() {
    return this.warnings.splice(0).map((w) => {
      const err = new Error(`${w.name}: ${w.message} (a listener is added per request to a long-lived signal and not removed)`);
      err.stack = `${err.message}\n${String(w.stack).split('\n').slice(1).join('\n')}`;
      return err;
    });
  }

  async handleTestEvent(event, state) {
    if (!this.checked) return;
    if (event.name === 'test_fn_success' || event.name === 'test_fn_failure') {
      // Node emits a warning on the next tick after the listener that caused it: let it come.
      await new Promise((resolve) => setImmediate(resolve));
      for (const err of this.takeErrors()) event.test.errors.push(err);
    } else if (event.name === 'run_finish') {
      await new Promise((resolve) => setImmediate(resolve));
      for (const err of this.takeErrors()) state.unhandledErrors.push(err);
    }
  }
}

module.exports = ListenerLeakEnvironment;
