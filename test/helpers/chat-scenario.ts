/**
 * The chat protocol of samples/chat, as both chat servers (samples/chat and
 * samples/nest) must play it: two sessions join a room, see each other,
 * one says five lines fired together, the other leaves.
 */
import { waitFor, type WatchedSession } from './client-session';

export const ofType = (msgs: any[], type: string): any[] => msgs.filter((m) => m.type === type);
export const lastPresence = (msgs: any[]): string[] | undefined => ofType(msgs, 'presence').at(-1)?.nicks;

/**
 * Runs the scenario and checks every step. Returns both sessions (bob
 * closed, ann still open) for the caller's own checks; the caller closes ann.
 */
export async function twoInARoom(join: (nick: string, room: string) => WatchedSession, room = 'lobby'): Promise<{ ann: WatchedSession; bob: WatchedSession; lines: string[] }> {
  const ann = join('ann', room);
  await ann.opened;
  await ann.s.send({ type: 'hello' });
  const bob = join('bob', room);
  await bob.opened;
  await bob.s.send({ type: 'hello' });
  await waitFor('ann to see bob', () => lastPresence(ann.received)?.length === 2);
  expect(lastPresence(ann.received)).toEqual(['ann', 'bob']);
  expect(ofType(ann.received, 'joined').map((m) => m.nick)).toEqual(['ann', 'bob']);

  const lines = ['hi bob', 'how are you?', 'third', 'fourth', 'fifth'];
  // Fired together: the client pipelines them, the server delivers in send() order.
  await Promise.all(lines.map((text) => ann.s.send({ type: 'say', text })));
  await waitFor('bob to get every line', () => ofType(bob.received, 'said').length === lines.length);
  const said = ofType(bob.received, 'said');
  expect(said.map((m) => [m.from, m.text])).toEqual(lines.map((l) => ['ann', l]));
  expect(new Set(said.map((m) => m.id)).size).toBe(lines.length);
  // The sender sees its own lines too, in the same order.
  expect(ofType(ann.received, 'said').map((m) => m.text)).toEqual(lines);
  // No session id ever reaches another client.
  expect(JSON.stringify(bob.received)).not.toContain(ann.s.id!);

  await bob.s.close();
  expect(bob.closed).toEqual([expect.objectContaining({ code: 'CLIENT' })]);
  await waitFor('ann to see bob leave', () => ofType(ann.received, 'left').length === 1 && lastPresence(ann.received)?.length === 1);
  expect(ofType(ann.received, 'left')[0]).toMatchObject({ nick: 'bob' });
  expect(JSON.stringify(ann.received)).not.toContain(bob.s.id!);
  return { ann, bob, lines };
}
