// The socket's message handler, in JS so that a frame crosses into the module once and allocates nothing there:
// the JS engine parses it, the strings the session decides on are written as UTF-8 into a buffer the module owns,
// flags, their ends and the time into another, and the module is called with the event object. The module reads
// them (src/web/reader.rs) and applies its rules.

// The hand-off layout is defined here once: build.rs derives the module's constants (src/web/reader.rs) from
// every top-level `const NAME = <integer>;` of this file.

// Flags: what the frame holds (a string field counts only when it is a string).
const USER = 1; // `user` is an object
const ONLINE = 2; // `user.online === true`
const ME = 4; // `me` is an object
const ERROR = 8; // `error` is an object
const ID = 16; // `user.id`
const STATUS = 32; // `user.status`
const LAST_ACTIVE = 64; // `user.last_active`
const CONNECTION_ID = 128;
const TOO_LONG = 256; // the strings did not fit the buffer: the module reads them from the event

// The header, doubles at `header`: the flags, where each string ends in the buffer (five of them, in this order:
// `type`, `user.id`, `user.status`, `user.last_active`, `connection_id`, each starting where the one before
// ends), and the time.
const FLAGS_AT = 0;
const ENDS_AT = 1;
const TIME_AT = 6;
const HEADER_LENGTH = 8;

const object = (value) => typeof value === 'object' && value !== null;
const encoder = new TextEncoder();

/**
 * Sets `ws.onmessage`: every event of a text frame (a JSON object with a string `type`, or an array of them: a batch,
 * taken in order) is stamped with `received_at` and handed to `onFrame(event)`, its strings (`type`, `user.id`, `user.status`,
 * `user.last_active`, `connection_id`) written one after the other into the `length` bytes at `text` in `memory`,
 * and the `HEADER_LENGTH` doubles at `header` set to the flags, where each string ends, and the time.
 */
export function receiveFrames(ws, onFrame, memory, header, text, length) {
  let bytes;
  let fields;
  let at = 0;
  // Writes `value` at `at`; false when it does not fit.
  const put = (value) => {
    const n = value.length;
    if (at + n > length) return false;
    for (let i = 0; i < n; i++) {
      const code = value.charCodeAt(i);
      if (code > 0x7f) {
        const { read, written } = encoder.encodeInto(value.slice(i), bytes.subarray(at + i));
        at += i + written;
        return read === n - i;
      }
      bytes[at + i] = code;
    }
    at += n;
    return true;
  };
  let now;
  ws.onmessage = (message) => {
    const data = message.data;
    if (typeof data !== 'string') return;
    let parsed;
    try {
      parsed = JSON.parse(data);
    } catch {
      return;
    }
    now = new Date();
    if (Array.isArray(parsed)) {
      for (const event of parsed) take(event);
    } else {
      take(parsed);
    }
  };
  const take = (event) => {
    const type = object(event) && event.type;
    if (typeof type !== 'string') return;
    // A grown memory detaches the old views.
    if (!fields || fields.length === 0) {
      bytes = new Uint8Array(memory.buffer, text, length);
      fields = new Float64Array(memory.buffer, header, HEADER_LENGTH);
    }
    at = 0;
    let fits = put(type);
    const typeEnd = at;
    let flags = 0;
    let idEnd = at;
    let statusEnd = at;
    let lastActiveEnd = at;
    const user = event.user;
    if (object(user)) {
      flags = user.online === true ? USER | ONLINE : USER;
      const { id, status, last_active: lastActive } = user;
      if (typeof id === 'string') {
        flags |= ID;
        fits = fits && put(id);
      }
      idEnd = at;
      if (typeof status === 'string') {
        flags |= STATUS;
        fits = fits && put(status);
      }
      statusEnd = at;
      if (typeof lastActive === 'string') {
        flags |= LAST_ACTIVE;
        fits = fits && put(lastActive);
      }
      lastActiveEnd = at;
    }
    const connectionId = event.connection_id;
    if (typeof connectionId === 'string') {
      flags |= CONNECTION_ID;
      fits = fits && put(connectionId);
    }
    if (object(event.me)) flags |= ME;
    if (object(event.error)) flags |= ERROR;
    if (!fits) flags |= TOO_LONG;
    event.received_at = now;
    fields[FLAGS_AT] = flags;
    fields[ENDS_AT] = typeEnd;
    fields[ENDS_AT + 1] = idEnd;
    fields[ENDS_AT + 2] = statusEnd;
    fields[ENDS_AT + 3] = lastActiveEnd;
    fields[ENDS_AT + 4] = at;
    fields[TIME_AT] = now.getTime();
    onFrame(event);
  };
}

/** `users[event.user.id] = event.user`: the cache entry of a user event, keyed without a string crossing. */
export function cacheEventUser(users, event) {
  const user = event.user;
  users[user.id] = user;
}
