// The socket's message handler, in JS so that a frame crosses into the module once and allocates nothing there:
// the JS engine parses it, the strings the session decides on are written as UTF-8 into a buffer the module owns,
// each event's flags and their ends and the time into another, and the module is called once with the event (or
// the events of a batch). The module reads them (src/web/reader.rs) and applies its rules.

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

// The header, doubles at `header`: how many events the call hands over, the time, then one record per event: its
// flags and where each of its strings ends in the buffer (five of them, in this order: `type`, `user.id`,
// `user.status`, `user.last_active`, `connection_id`, each starting where the one before ends, the first where the
// record before ends, or at 0). A batch frame is handed over in one call of up to `MAX_EVENTS` events (more calls
// when their strings fill the buffer first).
const COUNT_AT = 0;
const TIME_AT = 1;
const RECORDS_AT = 2;
const RECORD_LENGTH = 6;
const FLAGS_AT = 0; // in a record, as is the one below
const ENDS_AT = 1;
const MAX_EVENTS = 32;
const HEADER_LENGTH = 194; // RECORDS_AT + MAX_EVENTS * RECORD_LENGTH

const object = (value) => typeof value === 'object' && value !== null;
const encoder = new TextEncoder();

/**
 * Sets `ws.onmessage`: every event of a text frame (a JSON object with a string `type`, or an array of them: a batch,
 * taken in order) is stamped with `received_at`, its strings (`type`, `user.id`, `user.status`, `user.last_active`,
 * `connection_id`) written one after the other into the `length` bytes at `text` in `memory` and its record (flags,
 * where its strings end) into the `HEADER_LENGTH` doubles at `header`, with the count and the time; then
 * `onFrame(events)` is called once for them all: with the event itself when it is one, else an array of them.
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
  // The events written since the last call, and how many.
  let pending = [];
  let count = 0;
  const flush = () => {
    if (count === 0) return;
    fields[COUNT_AT] = count;
    fields[TIME_AT] = now.getTime();
    const events = count === 1 ? pending[0] : pending;
    pending = [];
    count = 0;
    at = 0;
    onFrame(events);
  };
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
    flush();
  };
  const take = (event) => {
    const type = object(event) && event.type;
    if (typeof type !== 'string') return;
    // A record that does not fit after others goes into the next call, alone in the buffer if need be.
    if (!write(event, type) && count > 0) {
      flush();
      write(event, type);
    }
    event.received_at = now;
    pending.push(event);
    count += 1;
    if (count === MAX_EVENTS) flush();
  };
  // Writes the record of `event` at `count`; false when its strings did not fit (it is then marked TOO_LONG, its
  // strings read from the event).
  const write = (event, type) => {
    // A grown memory (the module allocates while it handles a call) detaches the old views.
    if (!fields || fields.length === 0) {
      bytes = new Uint8Array(memory.buffer, text, length);
      fields = new Float64Array(memory.buffer, header, HEADER_LENGTH);
    }
    const start = at;
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
    if (!fits) {
      flags |= TOO_LONG;
      at = start;
    }
    const record = RECORDS_AT + count * RECORD_LENGTH;
    fields[record + FLAGS_AT] = flags;
    fields[record + ENDS_AT] = typeEnd;
    fields[record + ENDS_AT + 1] = idEnd;
    fields[record + ENDS_AT + 2] = statusEnd;
    fields[record + ENDS_AT + 3] = lastActiveEnd;
    fields[record + ENDS_AT + 4] = at;
    return fits;
  };
}

/** `users[event.user.id] = event.user`: the cache entry of a user event, keyed without a string crossing. */
export function cacheEventUser(users, event) {
  const user = event.user;
  users[user.id] = user;
}
