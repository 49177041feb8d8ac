/**
 * The chat rooms of samples/chat, as decorated handlers on an ordinary Nest
 * provider. Same protocol and rules (see samples/chat/server.ts); the
 * validation helpers are imported from there. Room membership is a store
 * group and the nick is `session.user`: no chat state in this process.
 */
import { Inject, Injectable } from '@nestjs/common';
import { BidiWebService, OnClose, OnMessage, OnOpen } from '../../src/nest';
import type { MessageInfo, OpenRequest, ServerSession } from '../../src/nest';
import { chatUserFromMeta, messageId, roomGroup, TEXT_MAX } from '../chat/server';
import type { ChatMessage, ChatState, ChatUser } from '../chat/server';

type ChatSession = ServerSession<ChatUser, ChatState>;

@Injectable()
export class ChatHandlers {
  // Explicit token: tsx (esbuild) emits no decorator metadata.
  constructor(@Inject(BidiWebService) private readonly bidi: BidiWebService<ChatUser, ChatState>) {}

  @OnOpen()
  async open(session: ChatSession, { meta }: OpenRequest): Promise<void> {
    session.user = chatUserFromMeta(meta);
    session.state = { announced: false };
    await session.join(roomGroup(session.user.room));
  }

  /** The page sends it on open; any first message announces the session (see samples/chat). */
  @OnMessage({ type: 'hello' })
  async hello(session: ChatSession): Promise<void> {
    await this.announce(session);
  }

  @OnMessage({ type: 'say' })
  async say(session: ChatSession, data: { text?: unknown }, { seq }: MessageInfo): Promise<void> {
    await this.announce(session);
    if (typeof data.text !== 'string') return this.refuse(session, 'unknown message');
    const text = data.text.trim();
    if (text.length === 0) return;
    if (text.length > TEXT_MAX) return this.refuse(session, `a message may be at most ${TEXT_MAX} characters`);
    const { nick, room } = session.user;
    await this.publish(room, { type: 'said', id: await messageId(session.id, seq), from: nick, text, at: Date.now() });
  }

  /** Everything else. */
  @OnMessage()
  async unknown(session: ChatSession): Promise<void> {
    await this.announce(session);
    await this.refuse(session, 'unknown message');
  }

  @OnClose()
  async close(session: ChatSession): Promise<void> {
    const { nick, room } = session.user;
    // Leave first so the presence below no longer counts us.
    await session.leave(roomGroup(room));
    if (session.state.announced) await this.publish(room, { type: 'left', nick, at: Date.now() });
    await this.publish(room, await this.presence(room));
  }

  private async announce(session: ChatSession): Promise<void> {
    if (session.state.announced) return;
    const { nick, room } = session.user;
    session.state.announced = true;
    await this.publish(room, { type: 'joined', nick, at: Date.now() });
    await this.publish(room, await this.presence(room));
  }

  private async refuse(session: ChatSession, message: string): Promise<void> {
    await session.send({ type: 'error', message } satisfies ChatMessage);
  }

  /** Read from the store on every call. */
  private async presence(room: string): Promise<ChatMessage> {
    const sids = await this.bidi.hub.members(roomGroup(room));
    const views = sids.length > 0 ? await this.bidi.hub.inspect(sids) : [];
    const nicks = new Set<string>();
    for (const v of views) if (v?.status === 'open' && v.user) nicks.add(v.user.nick);
    return { type: 'presence', nicks: [...nicks].sort((a, b) => a.localeCompare(b)) };
  }

  private async publish(room: string, msg: ChatMessage): Promise<void> {
    // Written once; a member too far behind is closed by bidiweb ('group-overrun'), never left with a hole.
    await this.bidi.publish(roomGroup(room), msg);
  }
}
