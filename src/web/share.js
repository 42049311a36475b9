// One socket for all the tabs of a browser that connect the same user to the same server with the same API key.
//
// The tab holding a Web Lock named after the three (navigator.locks) is the leader: it holds the one WebSocket and
// passes every frame it receives to the other tabs over a BroadcastChannel of the same name; they hand the leader
// the frames they send. Each client sees a WebSocket-like link and runs as if the socket were its own: it takes the
// connection's first frame (its first `health.check`, with the shared `connection_id` its REST calls carry) and every frame
// after, pings through the leader, and reconnects after a close like any other. The server sees one connection, which
// carries every tab's subscriptions: each tab subscribes with the shared connection id, and re-subscribes after every
// reconnect, so after a handover the new connection carries what the live tabs asked for.
//
// The leader leaves (closed, crashed, frozen, hidden into the back/forward cache, `disconnectUser()`): the browser
// gives the lock to the tab that waited longest, which tells the others (their links close with LEADER_LEFT, on which
// the client reconnects at once, without backoff) and opens the socket. A leader leaving with others waiting closes
// with 4001, which the server treats as a page going away (offline only after the grace), so peers see no flap; the
// last tab's `disconnectUser()` closes with 1000 and the user goes offline at once.
//
// A tab that goes (closed, crashed, `disconnectUser()`) takes its subscriptions with it: each tab holds a lock of its
// own while it takes part, and the leader, told by a tab leaving or finding a tab's lock gone (checked every
// `TABS_MS`), renews the connection: its socket closes with 4001 and every link with LEADER_LEFT, and the live tabs
// re-subscribe what they follow on the new one, as after a handover (peers see no flap, the grace covers the gap).
// Stream's protocol has no way to stop following a user, so a new connection is how the server forgets.
//
// Hand-written rather than built from web-sys bindings: the module's glue for locks and channels weighs more than
// this whole file (see the README's "Size").

/** The client-local close code of a link whose leader left: reconnect at once. Never on the wire. */
const LEADER_LEFT = 4100;
const CONNECTING = 0;
const OPEN = 1;
const CLOSING = 2;
const CLOSED = 3;
/** A leader that leaves a follower's message unanswered this long (it answers in milliseconds) is stuck. */
const STUCK_MS = 5_000;
/**
 * A client whose link closed and that opened none since for this long gave up (its `connectUser` failed): its tab
 * stops leading or waiting to lead. Reconnect delays never exceed 25 s.
 */
const IDLE_MS = 30_000;
/** How often a leader with followers checks that their tabs still run (a crashed tab sends nothing). */
const TABS_MS = 10_000;
/** The close codes with which a client leaves for good (`disconnectUser()`) or for now (page hidden, frozen). */
const NORMAL = 1000;
const GOING_AWAY = 4001;

/** This page's participants, by the id of the client they serve. */
const participants = new Map();

/**
 * Opens the socket of the client `id` to `url`: a WebSocket of its own when `id` is empty or the page lacks Web
 * Locks or BroadcastChannel (or is no page: workers and Node keep their own socket), else a link over the leader's.
 */
export function openSocket(url, id) {
  const locks = globalThis.navigator?.locks;
  if (!id || !locks || typeof BroadcastChannel !== 'function' || !globalThis.document) return new WebSocket(url);
  let participant = participants.get(id);
  if (!participant) {
    // Shared by the server's address, the API key and the user: every other part of the URL varies per attempt.
    const parsed = new URL(url);
    const query = parsed.searchParams;
    const user = JSON.parse(query.get('json') || '{}').user_id;
    const name = `presence-client ${parsed.origin}${parsed.pathname} ${query.get('api_key')} ${user}`;
    participant = new Participant(name, id, locks);
    participants.set(id, participant);
  }
  return participant.open(url);
}

class Participant {
  constructor(name, id, locks) {
    this.id = id;
    this.locks = locks;
    this.name = name;
    /** The current link, the socket behind it while leading, and that socket's first frame. */
    this.link = null;
    this.ws = null;
    this.ok = null;
    this.lead = false;
    this.gone = false;
    /** A follower spoke to this tab while it led: from then on it passes the frames on (alone, it posts none). */
    this.followed = false;
    /** Since when this follower waits for the leader's answer (to `hello` or a frame it sent); 0: none due. */
    this.asked = 0;
    this.stuck = false;
    this.channel = new BroadcastChannel(name);
    this.channel.onmessage = ({ data }) => this.heard(data);
    /** This tab's own lock, held while it takes part; the other tabs' the leader saw held at its last check. */
    this.tab = `${name} tab ${id}`;
    this.tabs = null;
    // Refused only when the page is going away, and then nobody needs to see the lock.
    locks.request(this.tab, () => new Promise((release) => {
      this.untab = release;
      if (this.gone) release();
    })).catch(() => {});
    this.request(false);
  }

  /**
   * As leader: renews the connection when a tab that took part is gone (`left`: one said so; else one whose lock
   * was held at the last check no longer is).
   */
  check(left) {
    if (!this.lead || !this.followed) return;
    this.locks.query().then(({ held }) => {
      const tabs = new Set(held.map((lock) => lock.name).filter((name) => name.startsWith(`${this.name} tab `)));
      const gone = left || [...(this.tabs ?? [])].some((name) => !tabs.has(name));
      this.tabs = tabs;
      const ws = this.ws;
      if (!gone || !this.lead || ws?.readyState !== OPEN) return;
      this.ws = this.ok = null;
      this.tabs = null;
      this.post('close', LEADER_LEFT);
      ws.close(GOING_AWAY);
      this.link?.end(LEADER_LEFT);
    }, () => {});
  }

  /**
   * Waits for the lock, and leads once given it. `steal`: taken from a leader that stopped answering (a page frozen
   * without its `freeze` event), which learns it when it runs again and follows.
   */
  request(steal) {
    this.abort?.abort();
    const abort = new AbortController();
    this.abort = abort;
    this.locks
      .request(this.name, steal ? { steal } : { signal: abort.signal }, () => {
        if (this.gone || abort !== this.abort) return undefined;
        this.lead = true;
        this.post('lead');
        const link = this.link;
        if (link?.readyState === OPEN) link.end(LEADER_LEFT);
        else if (link?.readyState === CONNECTING) this.connect(link);
        this.watch = setInterval(() => this.check(false), TABS_MS);
        return new Promise((release) => {
          this.release = release;
        });
      })
      .catch(() => {
        if (!this.lead || this.gone || abort !== this.abort) return;
        // Stolen: another tab holds the socket now.
        const ws = this.ws;
        this.lead = false;
        clearInterval(this.watch);
        this.ws = this.ok = this.release = null;
        ws?.close(GOING_AWAY);
        this.link?.end(LEADER_LEFT);
        this.request(false);
      });
  }

  post(type, data) {
    if (this.gone) return;
    this.channel.postMessage({ type, data });
    if (!this.lead && !this.asked) this.asked = Date.now();
  }

  open(url) {
    clearTimeout(this.idle);
    const link = new Link(this, url);
    this.link = link;
    if (this.stuck && !this.lead) {
      this.stuck = false;
      this.request(true);
    }
    if (this.lead) this.connect(link);
    else this.post('hello');
    return link;
  }

  /** The leader's socket behind `link`. */
  connect(link) {
    const ws = new WebSocket(link.url);
    this.ws = ws;
    link.ws = ws;
    let first = true;
    ws.onmessage = ({ data }) => {
      if (typeof data !== 'string' || this.ws !== ws) return;
      if (first) {
        first = false;
        if (data.includes('"connection.error"')) {
          // Refused, for this tab's credentials: the next tab tries with its own, and this one's error is its own.
          this.ws = null;
          this.leave();
        } else {
          // The connection's first health.check, with `connection_id` and `me`.
          this.ok = data;
          if (this.followed) this.post('ok', data);
        }
      } else {
        // Posting costs a structured clone and a task per frame (measured: about 14 µs an event in the ingest
        // benchmark): a tab alone pays nothing.
        if (this.followed) this.post('frame', data);
        // A tab joining later starts from the user as the last update left them, not as they connected.
        if (this.ok && data.includes('"user.updated"')) this.updated(data);
      }
      link.deliver(data);
    };
    ws.onerror = () => link.onerror?.(new Event('error'));
    ws.onclose = ({ code }) => {
      // Closed by the server (or the network): the other tabs' links close alike.
      if (this.ws === ws) {
        this.ws = this.ok = null;
        this.post('close', code);
        // Refused for good: the next tab tries with its own credentials.
        if (code === NORMAL) this.leave();
      }
      link.end(code);
    };
  }

  updated(data) {
    try {
      const ok = JSON.parse(this.ok);
      for (const { type, user } of [].concat(JSON.parse(data))) {
        if (type === 'user.updated' && user?.id === ok.me?.id) ok.me = { ...ok.me, ...user };
      }
      this.ok = JSON.stringify(ok);
    } catch {
      // not this user's update
    }
  }

  heard({ type, data }) {
    const link = this.link;
    if (this.lead) {
      if (type === 'hello' || type === 'send') this.followed = true;
      if (type === 'bye' || type === 'hello') this.check(type === 'bye');
      if (type === 'hello') this.post(this.ok ? 'ok' : 'wait', this.ok);
      else if (type === 'send' && this.ws?.readyState === OPEN) this.ws.send(data);
      return;
    }
    // Anything but a follower's message shows the leader runs.
    if (type !== 'hello' && type !== 'send') this.asked = 0;
    if (!link) return;
    if (type === 'ok' && link.state === CONNECTING) {
      link.state = OPEN;
      link.deliver(data);
    } else if (link.state === OPEN) {
      if (type === 'frame') link.deliver(data);
      else if (type === 'close') link.end(data);
      else if (type === 'lead') link.end(LEADER_LEFT);
    }
  }

  /** The client closed its link: `code` 1000 or 4001 ends its part; other codes precede a reconnect. */
  close(link, code, reason) {
    const ws = link.ws;
    const leaving = code === NORMAL || code === GOING_AWAY;
    if (link === this.link) this.link = null;
    if (!ws) {
      if (leaving) this.leave();
      // Given up by the client while the leader left it unanswered for seconds: the leader is stuck (frozen
      // without a `freeze` event), and the lock is taken from it when the client connects again.
      else if (this.asked && Date.now() - this.asked > STUCK_MS) this.stuck = true;
      link.end(code ?? 1005);
      return;
    }
    const current = ws === this.ws;
    if (current) {
      this.ws = this.ok = null;
      this.post('close', LEADER_LEFT);
    }
    if (code !== NORMAL || !current) {
      if (code === undefined) ws.close();
      else ws.close(code, reason);
      if (leaving) this.leave();
      return;
    }
    // The last tab's disconnectUser() closes with 1000; with others waiting to lead, the user stays online.
    this.locks
      .query()
      .then(({ pending }) => pending.some((lock) => lock.name === this.name), () => false)
      .then((others) => {
        ws.close(others ? GOING_AWAY : NORMAL, reason);
        this.leave();
      });
  }

  leave() {
    if (this.gone) return;
    // A follower's subscriptions go with it (a leader's go with its socket).
    if (!this.lead) this.post('bye');
    this.gone = true;
    clearTimeout(this.idle);
    participants.delete(this.id);
    clearInterval(this.watch);
    this.abort.abort();
    this.release?.();
    this.untab?.();
    this.channel.close();
  }
}

/** What the client holds: a WebSocket to it (`readyState`, `send`, `close`, the `on*` handlers, `close` events). */
class Link extends EventTarget {
  constructor(participant, url) {
    super();
    this.participant = participant;
    this.url = url;
    this.ws = null;
    this.state = CONNECTING;
    this.onmessage = this.onclose = this.onerror = null;
  }

  get readyState() {
    return this.ws && this.state < CLOSING ? this.ws.readyState : this.state;
  }

  send(text) {
    if (this.ws) this.ws.send(text);
    else if (this.state === OPEN) this.participant.post('send', text);
  }

  close(code, reason) {
    if (this.state >= CLOSING) return;
    this.state = CLOSING;
    this.participant.close(this, code, reason);
  }

  deliver(data) {
    if (this.state < CLOSING) this.onmessage?.({ data });
  }

  /** Closed, with `code`: told to the client, as a socket's close is, in a task of its own. */
  end(code) {
    if (this.state === CLOSED) return;
    this.state = CLOSED;
    const participant = this.participant;
    if (participant.link === this) participant.link = null;
    if (!participant.link && !participant.gone) {
      clearTimeout(participant.idle);
      participant.idle = setTimeout(() => participant.leave(), IDLE_MS);
    }
    setTimeout(() => {
      const event = new CloseEvent('close', { code });
      this.onclose?.(event);
      this.dispatchEvent(event);
    });
  }
}
