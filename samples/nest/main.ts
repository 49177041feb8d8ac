/**
 * The chat sample (samples/chat) as a NestJS app: BidiWebModule.forRoot and
 * decorated handlers (chat.handlers.ts).
 *
 *   npx tsx samples/nest/main.ts           # http://localhost:3001, in-memory store
 *   PORT=8080 npx tsx samples/nest/main.ts
 */
import { createNestChatApp } from './app.module';

async function main(): Promise<void> {
  const port = Number(process.env.PORT ?? 3001);
  const app = await createNestChatApp();
  app.enableShutdownHooks();
  await app.listen(port);
  console.log(`[chat/nest] listening on http://localhost:${port} (in-memory store: sessions end on restart)`);
}

main().catch((err) => {
  console.error(`[chat/nest] failed to start: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
