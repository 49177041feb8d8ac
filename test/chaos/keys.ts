/** Redis keys of the chaos bookkeeping of one session (same hash tag as the session: one Cluster slot). */
export function chaosKeys(prefix: string, sid: string) {
  const tag = `${prefix}chaos:{${sid}}`;
  return {
    /** HASH seq → 1: seqs the handler has seen (first deliveries). */
    seen: `${tag}:seen`,
    /** LIST of first deliveries, in order: {"q":seq,"t":ms,"d":data}. */
    log: `${tag}:log`,
    /** LIST of seqs the handler saw again (redeliveries). */
    redelivered: `${tag}:redelivered`,
    /** STRING: onClose runs. */
    closes: `${tag}:closes`,
    /** HASH pushId → {"seqs":[...],...}: the result of each push. */
    pushed: `${tag}:pushed`,
    /** STRING: the push in progress, {"pushId","base","n"}. */
    intent: `${tag}:intent`,
    /** STRING: the push lock (a token). */
    lock: `${tag}:lock`,
    /** LIST (store-wide): anything the push endpoint found inconsistent. */
    anomalies: `${prefix}chaos:anomalies`,
  };
}
