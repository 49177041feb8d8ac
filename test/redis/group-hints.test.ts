/**
 * The group hints cache (src/redis/group-hints.ts): what a member's re-read may pull without
 * reading the group's log. It must never claim to know what it did not hear, and stays bounded.
 */
import { GroupHints, HINTS_MAX_CHARS, HINTS_MAX_ENTRIES, HINTS_PER_GROUP } from '../../src/redis/group-hints';

/** A wake-up's news; `json` null: the wake-up did not carry the entry. */
const news = (gseq: number, json: string | null = `"e${gseq}"`, epoch = 'E') => ({ epoch, gseq, t: gseq * 1000, ...(json === null ? {} : { json }) });

describe('group hints', () => {
  it('answers the entries after a cursor, [] when nothing was heard, null when they do not reach back to it', () => {
    const h = new GroupHints();
    expect(h.after('ch', 'E', 0, 1)).toEqual({ epoch: 'E', entries: [] });
    for (let g = 3; g <= 5; g++) h.heard('ch', news(g), 1);
    expect(h.after('ch', 'E', 2, 1)!.entries.map((e) => e.gseq)).toEqual([3, 4, 5]);
    expect(h.after('ch', 'E', 4, 1)!.entries.map((e) => e.json)).toEqual(['"e5"']);
    expect(h.after('ch', 'E', 5, 1)).toEqual({ epoch: 'E', entries: [] });
    expect(h.after('ch', 'E', 1, 1)).toBeNull(); // gseq 2 was never heard
  });

  it('strict (a cursor just read): tells only from entries that reach back to the cursor, in the same run of hearing', () => {
    const h = new GroupHints();
    expect(h.after('ch', 'E', 0, 1, true)).toBeNull(); // nothing heard: cannot tell
    for (let g = 3; g <= 5; g++) h.heard('ch', news(g), 1);
    expect(h.after('ch', 'E', 2, 1, true)!.entries.map((e) => e.gseq)).toEqual([3, 4, 5]);
    expect(h.after('ch', 'E', 5, 1, true)).toEqual({ epoch: 'E', entries: [] });
    expect(h.after('ch', 'E', 1, 1, true)).toBeNull();
    expect(h.after('ch', 'E', 2, 2, true)).toBeNull(); // another run: wake-ups may have gone unheard
    // After a wake-up it could not read, the channel's run changes (Subscriptions): the same answer as
    // above; redis-units.test.ts, *a group wake-up the store cannot read ends its run of hearing*.
    expect(h.after('ch', 'E', 5, 2)).toBeNull();
  });

  it('starts over at a gap, a new epoch or a new connection, and knows nothing across a reconnect', () => {
    const h = new GroupHints();
    h.heard('ch', news(1), 1);
    h.heard('ch', news(3), 1); // 2 was missed
    expect(h.after('ch', 'E', 0, 1)).toBeNull();
    expect(h.after('ch', 'E', 2, 1)!.entries.map((e) => e.gseq)).toEqual([3]);
    h.heard('ch', news(1, '"n1"', 'F'), 1); // the log began again
    expect(h.after('ch', 'E', 3, 1)).toEqual({ epoch: 'F', entries: [{ gseq: 1, t: 1000, json: '"n1"' }] });
    expect(h.after('ch', 'F', 1, 2)).toBeNull(); // heard on connection 1, asked on 2
    h.heard('ch', news(2, '"n2"', 'F'), 2);
    expect(h.size.entries).toBe(1);
  });

  it('does not pretend to know an entry whose text the wake-up did not carry', () => {
    const h = new GroupHints();
    h.heard('ch', news(1), 1);
    h.heard('ch', news(2, null), 1);
    h.heard('ch', news(3), 1);
    expect(h.after('ch', 'E', 0, 1)).toBeNull();
    expect(h.after('ch', 'E', 2, 1)!.entries.map((e) => e.gseq)).toEqual([3]);
  });

  it(`keeps at most ${HINTS_PER_GROUP} entries per group and stays under its total bounds`, () => {
    const h = new GroupHints();
    for (let g = 1; g <= HINTS_PER_GROUP + 10; g++) h.heard('ch', news(g), 1);
    expect(h.size.entries).toBe(HINTS_PER_GROUP);
    expect(h.after('ch', 'E', 10, 1)!.entries).toHaveLength(HINTS_PER_GROUP);
    expect(h.after('ch', 'E', 9, 1)).toBeNull();
    // Many groups: the entry bound.
    const many = new GroupHints();
    for (let i = 0; i < HINTS_MAX_ENTRIES / 16 + 10; i++) for (let g = 1; g <= 16; g++) many.heard(`ch${i}`, news(g, '1'), 1);
    expect(many.size.entries).toBeLessThanOrEqual(HINTS_MAX_ENTRIES);
    // Large entries: the character bound.
    const big = new GroupHints();
    const text = JSON.stringify('x'.repeat(32_000));
    for (let i = 0; i < 400; i++) big.heard(`ch${i}`, news(1, text), 1);
    expect(big.size.chars).toBeLessThanOrEqual(HINTS_MAX_CHARS);
    expect(big.size.chars).toBeGreaterThan(0);
    // What the bounds made it forget, it does not claim was never published.
    expect(big.after('ch0', 'E', 1, 1)).toBeNull();
    expect(many.after('ch0', 'E', 16, 1)).toBeNull();
    // Dropping a group gives its share back.
    const before = big.size;
    big.drop('ch399');
    expect(big.size.chars).toBe(before.chars - text.length);
    // Forgotten (ch0, above) also after the bounds are reached again, until one of its entries is heard.
    for (let i = 400; i < 800; i++) big.heard(`ch${i}`, news(1, text), 1);
    expect(big.after('ch0', 'E', 1, 1)).toBeNull();
    big.heard('ch0', news(2, text), 1);
    expect(big.after('ch0', 'E', 1, 1)!.entries.map((e) => e.gseq)).toEqual([2]);
  });
});
