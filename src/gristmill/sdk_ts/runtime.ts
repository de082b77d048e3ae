// ---------------------------------------------------------------------------------------------
// Gristmill browser runtime: queue, batching, retry, session and identity. No dependencies.
// `gristmill sdk --lang ts` copies this file verbatim into every generated client, above the
// typed methods of the pack; edit it here (src/gristmill/sdk_ts/runtime.ts), not in the output.
// ---------------------------------------------------------------------------------------------

/** Options of a client. Only `writeKey` is required. */
export interface ClientOptions {
  /** A write key (`gmw_…`), sent as `Authorization: Bearer <key>`. */
  writeKey: string;
  /**
   * The Gristmill server's base URL, e.g. `https://collect.example.com`; events go to
   * `<endpoint>/v1/events`. Default `""`: the page's own origin (a reverse proxy in front of
   * Gristmill), which needs no CORS. A URL already ending in `/v1/events` is used as is.
   */
  endpoint?: string;
  /** Send when this many events are queued (default 20). */
  batchSize?: number;
  /** Send whatever is queued this often, in milliseconds (default 5000). */
  flushIntervalMs?: number;
  /** Retries of one batch after a 5xx, 408, 429 or network error before it is given up (default 10). */
  maxRetries?: number;
  /** First backoff delay in milliseconds; doubles per retry, with jitter (default 500). */
  retryBaseMs?: number;
  /** Longest backoff delay in milliseconds when the server sent no `Retry-After` (default 30000). */
  retryMaxMs?: number;
  /** Idle time after which a new session starts, in milliseconds (default 30 minutes). */
  sessionTimeoutMs?: number;
  /** Events kept queued at most (in memory and localStorage); older ones are dropped (default 1000). */
  maxQueue?: number;
  /** Prefix of the localStorage keys (default `gristmill:<pack>`). */
  storagePrefix?: string;
  /** Flush with `fetch(…, {keepalive: true})` when the page is hidden or left (default true). */
  flushOnHide?: boolean;
  /** Extra context merged into every event's `context`. */
  context?: Record<string, unknown>;
  /** Log sends and retries to the console (default false). */
  debug?: boolean;
}

/** Per-call overrides of the envelope. */
export interface TrackOptions {
  /** Default: a new random UUID. Keep it stable when re-sending the same fact yourself. */
  eventId?: string;
  /** Default: now. */
  occurredAt?: Date | string;
  /** Default: the id set by `identify`. */
  userId?: string;
  /** Merged over the automatic context (user agent, page URL, locale). */
  context?: Record<string, unknown>;
}

/** One event as `POST /v1/events` takes it (Gristmill's native envelope). */
export interface Envelope {
  event_id: string;
  event_type: string;
  schema_version: number;
  occurred_at: string;
  properties: Record<string, unknown>;
  anonymous_id: string;
  session_id: string;
  user_id?: string;
  context: Record<string, unknown>;
}

/** Counters of one client since it was created (this page load). */
export interface ClientStats {
  queued: number;
  /** Accepted by the server (2xx). */
  sent: number;
  /** Refused by the server as invalid and kept in its quarantine (207/422); never retried. */
  rejected: number;
  /** Given up: retries exhausted, or refused as a whole (400, 401, 403, 413 of one event …). */
  failed: number;
  /** Dropped because the queue was full. */
  dropped: number;
  /** Requests repeated after a retryable answer. */
  retries: number;
  /** Requests sent with `keepalive` because the page was hidden or left. */
  keepaliveRequests: number;
}

type Outcome =
  | { kind: "done"; rejected: number }
  | { kind: "retry"; retryAfterMs: number | null; why: string }
  | { kind: "split" }
  | { kind: "drop"; why: string };

interface SessionState {
  id: string;
  last: number;
}

const RETRYABLE = new Set([408, 429, 500, 502, 503, 504]);
/** Browsers allow 64 KiB of keepalive request bodies in flight per page; stay under it. */
const KEEPALIVE_BYTES = 60 * 1024;
const RETRY_AFTER_CAP_MS = 60 * 60 * 1000;

/** A random v4 UUID: `crypto.randomUUID` where the page is a secure context, else from
 * `crypto.getRandomValues` (also present on plain-http pages). */
export function uuid(): string {
  const c: Crypto | undefined = typeof crypto !== "undefined" ? crypto : undefined;
  if (c !== undefined && typeof c.randomUUID === "function") {
    return c.randomUUID();
  }
  const b = new Uint8Array(16);
  if (c !== undefined) {
    c.getRandomValues(b);
  } else {
    for (let i = 0; i < 16; i++) b[i] = Math.floor(Math.random() * 256);
  }
  b[6] = (b[6]! & 0x0f) | 0x40;
  b[8] = (b[8]! & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** `Retry-After` as milliseconds: delta-seconds or an HTTP date; null when absent or unreadable. */
export function parseRetryAfter(value: string | null, now: number = Date.now()): number | null {
  if (value === null) return null;
  const v = value.trim();
  if (/^\d+(\.\d+)?$/.test(v)) return Math.min(RETRY_AFTER_CAP_MS, Number(v) * 1000);
  const at = Date.parse(v);
  if (Number.isNaN(at)) return null;
  return Math.min(RETRY_AFTER_CAP_MS, Math.max(0, at - now));
}

/** localStorage that never throws (private mode, quota, disabled storage, no `window`). */
class Store {
  private readonly memory = new Map<string, string>();
  private readonly ls: Storage | null;

  constructor() {
    let ls: Storage | null = null;
    try {
      if (typeof localStorage !== "undefined") {
        const probe = "__gristmill_probe__";
        localStorage.setItem(probe, "1");
        localStorage.removeItem(probe);
        ls = localStorage;
      }
    } catch {
      ls = null;
    }
    this.ls = ls;
  }

  get(key: string): string | null {
    if (this.ls !== null) {
      try {
        return this.ls.getItem(key);
      } catch {
        /* fall through to memory */
      }
    }
    return this.memory.get(key) ?? null;
  }

  set(key: string, value: string): void {
    this.memory.set(key, value);
    if (this.ls !== null) {
      try {
        this.ls.setItem(key, value);
      } catch {
        /* quota: memory only */
      }
    }
  }

  remove(key: string): void {
    this.memory.delete(key);
    if (this.ls !== null) {
      try {
        this.ls.removeItem(key);
      } catch {
        /* ignore */
      }
    }
  }
}

function isEnvelope(x: unknown): x is Envelope {
  if (typeof x !== "object" || x === null) return false;
  const e = x as Record<string, unknown>;
  return (
    typeof e["event_id"] === "string" &&
    typeof e["event_type"] === "string" &&
    typeof e["occurred_at"] === "string"
  );
}

/** The server took the batch: every event is either stored or in its quarantine. */
function isAnswered(status: number): boolean {
  return (status >= 200 && status < 300) || status === 422;
}

/** How many events of an answered batch the server refused (207 `rejected`, 422 `errors`). */
async function rejectedIn(res: Response, n: number): Promise<number> {
  try {
    const body = (await res.json()) as { rejected?: number; errors?: unknown[] };
    return res.status === 422 ? (body.errors?.length ?? n) : (body.rejected ?? 0);
  } catch {
    return res.status === 422 ? n : 0;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * The transport every generated client extends: builds envelopes, queues them (in memory and
 * in localStorage, so a reload loses nothing), sends batches as a JSON array to
 * `POST /v1/events`, retries with exponential backoff and jitter (a `Retry-After` wins), and
 * flushes with a keepalive request when the page is hidden.
 *
 * Delivery is at least once; the event id is fixed when an event is tracked and stays the same
 * across every retry, reload and keepalive re-send, so the server's dedupe makes the effect
 * exactly once.
 */
export class GristmillClient {
  readonly stats: ClientStats = {
    queued: 0,
    sent: 0,
    rejected: 0,
    failed: 0,
    dropped: 0,
    retries: 0,
    keepaliveRequests: 0,
  };

  private readonly url: string;
  private readonly writeKey: string;
  private readonly batchSize: number;
  private readonly maxRetries: number;
  private readonly retryBaseMs: number;
  private readonly retryMaxMs: number;
  private readonly sessionTimeoutMs: number;
  private readonly maxQueue: number;
  private readonly prefix: string;
  private readonly extraContext: Record<string, unknown>;
  private readonly debug: boolean;
  private readonly store = new Store();
  private queue: Envelope[] = [];
  /** Event ids on the wire in a normal (not keepalive) request right now. */
  private readonly onWire = new Set<string>();
  /** Event ids in a keepalive request not answered yet (not sent again meanwhile). */
  private readonly keptAlive = new Set<string>();
  private pumping: Promise<void> | null = null;
  private timer: ReturnType<typeof setInterval> | null = null;
  private readonly hideListener: (() => void) | null = null;
  private readonly visibilityListener: (() => void) | null = null;
  private userId: string | null;
  private anonymousId: string;

  constructor(
    options: ClientOptions,
    readonly pack: string,
  ) {
    if (typeof options.writeKey !== "string" || options.writeKey === "") {
      throw new Error("gristmill: writeKey is required");
    }
    const endpoint = (options.endpoint ?? "").replace(/\/+$/, "");
    this.url = endpoint.endsWith("/v1/events") ? endpoint : `${endpoint}/v1/events`;
    this.writeKey = options.writeKey;
    this.batchSize = Math.max(1, options.batchSize ?? 20);
    this.maxRetries = Math.max(0, options.maxRetries ?? 10);
    this.retryBaseMs = Math.max(1, options.retryBaseMs ?? 500);
    this.retryMaxMs = Math.max(this.retryBaseMs, options.retryMaxMs ?? 30_000);
    this.sessionTimeoutMs = options.sessionTimeoutMs ?? 30 * 60 * 1000;
    this.maxQueue = Math.max(1, options.maxQueue ?? 1000);
    this.prefix = options.storagePrefix ?? `gristmill:${pack}`;
    this.extraContext = options.context ?? {};
    this.debug = options.debug ?? false;

    let anon = this.store.get(this.key("anonymous_id"));
    if (anon === null || anon === "") {
      anon = uuid();
      this.store.set(this.key("anonymous_id"), anon);
    }
    this.anonymousId = anon;
    this.userId = this.store.get(this.key("user_id"));
    this.queue = this.loadQueue();

    const interval = options.flushIntervalMs ?? 5000;
    if (interval > 0) {
      this.timer = setInterval(() => {
        if (this.queue.length > 0) void this.flush();
      }, interval);
    }
    if ((options.flushOnHide ?? true) && typeof addEventListener === "function") {
      this.hideListener = () => this.flushOnHide();
      this.visibilityListener = () => {
        if (typeof document !== "undefined" && document.visibilityState === "hidden") {
          this.flushOnHide();
        }
      };
      addEventListener("pagehide", this.hideListener);
      if (typeof document !== "undefined") {
        document.addEventListener("visibilitychange", this.visibilityListener);
      }
    }
    if (this.queue.length > 0) {
      this.log(`resuming ${this.queue.length} events queued before this page load`);
      setTimeout(() => void this.flush(), 0);
    }
  }

  // -- identity and session ------------------------------------------------------------------

  /** Sets the user id carried by every later event (kept across page loads). */
  identify(userId: string): void {
    this.userId = userId;
    this.store.set(this.key("user_id"), userId);
  }

  /** Forget the user: clears the user id, starts a new anonymous id and a new session. */
  reset(): void {
    this.userId = null;
    this.store.remove(this.key("user_id"));
    this.anonymousId = uuid();
    this.store.set(this.key("anonymous_id"), this.anonymousId);
    this.store.remove(this.key("session"));
  }

  getAnonymousId(): string {
    return this.anonymousId;
  }

  getUserId(): string | null {
    return this.userId;
  }

  /** The current session id (without touching it); a new one if the last has expired. */
  getSessionId(): string {
    return this.session(false);
  }

  /** Events queued and not yet acknowledged by the server. */
  pending(): number {
    return this.queue.length;
  }

  private session(touch: boolean): string {
    const now = Date.now();
    const raw = this.store.get(this.key("session"));
    let s: SessionState | null = null;
    if (raw !== null) {
      try {
        const parsed = JSON.parse(raw) as Partial<SessionState>;
        if (typeof parsed.id === "string" && typeof parsed.last === "number") {
          s = { id: parsed.id, last: parsed.last };
        }
      } catch {
        s = null;
      }
    }
    if (s === null || now - s.last > this.sessionTimeoutMs) {
      s = { id: uuid(), last: now };
      this.store.set(this.key("session"), JSON.stringify(s));
    } else if (touch) {
      s.last = now;
      this.store.set(this.key("session"), JSON.stringify(s));
    }
    return s.id;
  }

  // -- tracking ------------------------------------------------------------------------------

  /** Queue one event of a known type and version; returns its event id. Never throws on the
   * network; the generated `track…` methods call this. */
  protected enqueue(
    eventType: string,
    schemaVersion: number,
    properties: object,
    options: TrackOptions = {},
  ): string {
    const at = options.occurredAt ?? new Date();
    const ev: Envelope = {
      event_id: options.eventId ?? uuid(),
      event_type: eventType,
      schema_version: schemaVersion,
      occurred_at: typeof at === "string" ? at : at.toISOString(),
      properties: JSON.parse(JSON.stringify(properties)) as Record<string, unknown>,
      anonymous_id: this.anonymousId,
      session_id: this.session(true),
      context: { ...this.autoContext(), ...this.extraContext, ...(options.context ?? {}) },
    };
    const user = options.userId ?? this.userId;
    if (user !== null && user !== undefined && user !== "") ev.user_id = user;
    const stored = this.loadQueue();
    stored.push(ev);
    this.queue.push(ev);
    while (this.queue.length > this.maxQueue) {
      const old = this.queue.shift();
      this.stats.dropped += 1;
      console.warn("gristmill: queue full, dropped the oldest event", old?.event_id);
    }
    this.saveQueue(this.mergeStored(stored));
    this.stats.queued += 1;
    if (this.queue.length >= this.batchSize) void this.flush();
    return ev.event_id;
  }

  private autoContext(): Record<string, unknown> {
    const ctx: Record<string, unknown> = { library: { name: "gristmill-ts", pack: this.pack } };
    if (typeof navigator !== "undefined") {
      ctx["user_agent"] = navigator.userAgent;
      ctx["locale"] = navigator.language;
    }
    if (typeof location !== "undefined") ctx["page_url"] = location.href;
    if (typeof document !== "undefined") {
      if (document.title) ctx["page_title"] = document.title;
      if (document.referrer) ctx["referrer"] = document.referrer;
    }
    return ctx;
  }

  // -- the queue in localStorage ---------------------------------------------------------------

  private key(name: string): string {
    return `${this.prefix}:${name}`;
  }

  private loadQueue(): Envelope[] {
    const raw = this.store.get(this.key("queue"));
    if (raw === null) return [];
    try {
      const parsed: unknown = JSON.parse(raw);
      return Array.isArray(parsed) ? parsed.filter(isEnvelope) : [];
    } catch {
      return [];
    }
  }

  /** Other tabs of the same origin share the stored queue: keep their events, add ours. */
  private mergeStored(stored: Envelope[]): Envelope[] {
    const seen = new Set<string>();
    const out: Envelope[] = [];
    for (const e of [...stored, ...this.queue]) {
      if (!seen.has(e.event_id)) {
        seen.add(e.event_id);
        out.push(e);
      }
    }
    return out.slice(-this.maxQueue);
  }

  private saveQueue(events: Envelope[]): void {
    if (events.length === 0) this.store.remove(this.key("queue"));
    else this.store.set(this.key("queue"), JSON.stringify(events));
  }

  /** Acknowledged (or given up): out of memory and out of storage, for every tab. */
  private forget(ids: Set<string>): void {
    this.queue = this.queue.filter((e) => !ids.has(e.event_id));
    this.saveQueue(this.loadQueue().filter((e) => !ids.has(e.event_id)));
  }

  // -- sending -------------------------------------------------------------------------------

  /** Send everything queued; resolves when the queue is empty (delivered or given up). */
  flush(): Promise<void> {
    if (this.pumping === null) {
      this.pumping = this.pump().finally(() => {
        this.pumping = null;
      });
    }
    return this.pumping;
  }

  /** Stop the interval timer and the page-hide listeners (queued events stay stored). */
  close(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    if (this.hideListener !== null) removeEventListener("pagehide", this.hideListener);
    if (this.visibilityListener !== null && typeof document !== "undefined") {
      document.removeEventListener("visibilitychange", this.visibilityListener);
    }
  }

  private async pump(): Promise<void> {
    for (;;) {
      const batch = this.queue.filter((e) => !this.keptAlive.has(e.event_id));
      if (batch.length === 0) return;
      await this.deliver(batch.slice(0, this.batchSize));
    }
  }

  private stillQueued(batch: Envelope[]): Envelope[] {
    const ids = new Set(this.queue.map((e) => e.event_id));
    return batch.filter((e) => ids.has(e.event_id) && !this.keptAlive.has(e.event_id));
  }

  private async deliver(first: Envelope[]): Promise<void> {
    let batch = first;
    for (let attempt = 0; ; attempt++) {
      const outcome = await this.post(batch);
      const ids = new Set(batch.map((e) => e.event_id));
      if (outcome.kind === "done") {
        this.count(this.stillQueued(batch).length, outcome.rejected);
        this.forget(ids);
        return;
      }
      if (outcome.kind === "split") {
        const half = Math.ceil(batch.length / 2);
        await this.deliver(batch.slice(0, half));
        await this.deliver(batch.slice(half));
        return;
      }
      if (outcome.kind === "drop") {
        console.error(`gristmill: dropped ${batch.length} events: ${outcome.why}`);
        this.stats.failed += batch.length;
        this.forget(ids);
        return;
      }
      if (attempt >= this.maxRetries) {
        console.warn(
          `gristmill: giving up on ${batch.length} events after ${attempt + 1} tries: ${outcome.why}`,
        );
        this.stats.failed += batch.length;
        this.forget(ids);
        return;
      }
      const backoff = Math.min(this.retryMaxMs, this.retryBaseMs * 2 ** attempt);
      const wait = outcome.retryAfterMs ?? backoff / 2 + Math.random() * (backoff / 2);
      this.log(`${outcome.why}; retry ${attempt + 1} in ${Math.round(wait)} ms`);
      this.stats.retries += 1;
      await sleep(wait);
      // A keepalive flush on page hide may have delivered some of them meanwhile.
      batch = this.stillQueued(batch);
      if (batch.length === 0) return;
    }
  }

  private async post(batch: Envelope[]): Promise<Outcome> {
    for (const e of batch) this.onWire.add(e.event_id);
    let res: Response;
    try {
      res = await fetch(this.url, {
        method: "POST",
        headers: this.headers(),
        body: JSON.stringify(batch),
        credentials: "omit",
      });
    } catch (err) {
      return { kind: "retry", retryAfterMs: null, why: `network error: ${String(err)}` };
    } finally {
      for (const e of batch) this.onWire.delete(e.event_id);
    }
    const status = res.status;
    if (isAnswered(status)) return { kind: "done", rejected: await rejectedIn(res, batch.length) };
    if (status === 413 && batch.length > 1) return { kind: "split" };
    if (RETRYABLE.has(status) || status >= 500) {
      return {
        kind: "retry",
        retryAfterMs: parseRetryAfter(res.headers.get("Retry-After")),
        why: `HTTP ${status}`,
      };
    }
    let detail = "";
    try {
      detail = (await res.text()).slice(0, 300);
    } catch {
      detail = "";
    }
    return { kind: "drop", why: `HTTP ${status} ${detail}` };
  }

  private headers(): Record<string, string> {
    return { Authorization: `Bearer ${this.writeKey}`, "Content-Type": "application/json" };
  }

  /**
   * The page is being hidden or left: send what is queued (and not already on the wire) with
   * `fetch(…, {keepalive: true})`, which outlives the page. Not `navigator.sendBeacon`: a
   * beacon cannot carry the `Authorization` header and `POST /v1/events` takes the write key
   * from that header only. Events stay in localStorage until acknowledged, so anything the
   * browser does not get out now is sent on the next page load (same event ids: deduped).
   */
  private flushOnHide(): void {
    const waiting = this.queue.filter(
      (e) => !this.onWire.has(e.event_id) && !this.keptAlive.has(e.event_id),
    );
    let chunk: Envelope[] = [];
    let size = 2;
    let budget = KEEPALIVE_BYTES;
    const send = (events: Envelope[], bytes: number): boolean => {
      if (events.length === 0) return true;
      if (bytes > budget) return false;
      budget -= bytes;
      this.keepalive(events);
      return true;
    };
    for (const e of waiting) {
      const n = JSON.stringify(e).length + 1;
      if (chunk.length >= this.batchSize || size + n > budget) {
        if (!send(chunk, size)) return;
        chunk = [];
        size = 2;
      }
      chunk.push(e);
      size += n;
    }
    send(chunk, size);
  }

  private keepalive(events: Envelope[]): void {
    this.stats.keepaliveRequests += 1;
    const ids = new Set(events.map((e) => e.event_id));
    for (const id of ids) this.keptAlive.add(id);
    const settle = (): void => {
      for (const id of ids) this.keptAlive.delete(id);
    };
    try {
      fetch(this.url, {
        method: "POST",
        headers: this.headers(),
        body: JSON.stringify(events),
        credentials: "omit",
        keepalive: true,
      })
        .then(async (res) => {
          settle();
          if (isAnswered(res.status)) {
            this.count(this.stillQueued(events).length, await rejectedIn(res, events.length));
            this.forget(ids);
          }
        })
        .catch(() => {
          settle(); // still stored: sent by the normal path or on the next page load
        });
    } catch {
      settle(); // keepalive unsupported or over quota: the events stay stored
    }
  }

  private count(delivered: number, rejected: number): void {
    const bad = Math.min(delivered, rejected);
    this.stats.sent += delivered - bad;
    this.stats.rejected += bad;
    if (rejected > 0) console.warn(`gristmill: the server quarantined ${rejected} events`);
  }

  private log(message: string): void {
    if (this.debug) console.info(`gristmill: ${message}`);
  }
}
