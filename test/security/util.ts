/** Direct calls into a BidiServer (no HTTP), as src/core/fetch.ts builds requests. */
import type { BidiServer } from '../../src/core';
import { bidiRequest } from '../model/harness';

export interface Answer {
  status: number;
  headers: Record<string, string>;
  body: any;
}

export async function call(
  server: BidiServer<any, any>,
  method: string,
  path: string,
  init: { sid?: string; body?: unknown; query?: Record<string, string | number>; headers?: Record<string, string> } = {},
): Promise<Answer> {
  const headers: Record<string, string> = { ...(init.sid !== undefined ? { 'bidi-sid': init.sid } : {}), ...init.headers };
  const body = init.body === undefined ? undefined : typeof init.body === 'string' ? init.body : JSON.stringify(init.body);
  const res = await server.handle(bidiRequest(method, path, { headers, body, query: init.query }));
  if (!res) throw new Error(`${method} ${path}: not served`);
  return { status: res.status, headers: res.headers, body: res.body ? JSON.parse(res.body) : undefined };
}

export async function openSid(server: BidiServer<any, any>, body: unknown = { v: 1 }, headers: Record<string, string> = {}): Promise<string> {
  const r = await call(server, 'POST', '/session', { body, headers });
  if (r.status !== 201) throw new Error(`open: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body.sid;
}
