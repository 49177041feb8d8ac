/**
 * bidiweb metrics for Prometheus: an echo service whose OpenTelemetry
 * instruments are served at /metrics.
 *
 *   npx tsx samples/metrics/server.ts     # http://localhost:3003/session, http://localhost:3003/metrics
 *
 * The app owns the OpenTelemetry SDK (here `@opentelemetry/sdk-metrics` with
 * the Prometheus exporter in pull mode, mounted on the app's own server) and
 * hands bidiweb a `Meter`; bidiweb never imports OpenTelemetry itself.
 */
import { PrometheusExporter } from '@opentelemetry/exporter-prometheus';
import { MeterProvider } from '@opentelemetry/sdk-metrics';
import express from 'express';
import type { Express } from 'express';
import { bidiWeb } from '../../src/express';
import type { BidiExpressMiddleware } from '../../src/express';

export interface MetricsApp {
  app: Express;
  middleware: BidiExpressMiddleware<unknown, Record<string, unknown>>;
  /** Stop the core's timers and the meter provider. */
  stop(): Promise<void>;
}

export function createMetricsApp(): MetricsApp {
  // preventServerStart: the exporter's handler is mounted on this app instead of its own port.
  const exporter = new PrometheusExporter({ preventServerStart: true });
  const provider = new MeterProvider({ readers: [exporter] });
  const middleware = bidiWeb({
    meter: provider.getMeter('bidiweb'),
    onMessage: async (session, data, { seq }) => {
      await session.send({ echo: data, seq });
    },
  });
  const app = express();
  app.get('/metrics', (req, res) => exporter.getMetricsRequestHandler(req, res));
  app.use(middleware);
  return {
    app,
    middleware,
    stop: async () => {
      await middleware.server.dispose();
      await provider.shutdown();
    },
  };
}

if (require.main === module) {
  const port = Number(process.env.PORT ?? 3003);
  createMetricsApp().app.listen(port, () => console.log(`bidiweb on http://localhost:${port}/session, metrics on http://localhost:${port}/metrics`));
}
