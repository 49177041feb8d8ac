/** Injection tokens of BidiWebModule. */

/** The module options (`BidiWebModuleOptions`), as given to `forRoot` or made by `forRootAsync`. */
export const BIDIWEB_OPTIONS = Symbol('BIDIWEB_OPTIONS');
/** The session `Store`: `options.store`, or a `MemoryStore` the module builds (and disposes). */
export const BIDIWEB_STORE = Symbol('BIDIWEB_STORE');
/** The core `BidiServer` the module built and mounted. */
export const BIDIWEB_SERVER = Symbol('BIDIWEB_SERVER');

/** Method metadata key of `@OnOpen` / `@OnMessage` / `@OnClose` (an array of `BidiHandlerMetadata`). */
export const BIDIWEB_HANDLER_METADATA = 'bidiweb:handler';
