// The presence-client demo: sign in as a user, watch a channel and a users query with presence, and show
// everything the client reports as it happens.
//
// The page is drawn from the presence store (createPresenceStore): the connection, the own card and the roster
// repaint from its snapshot when it changes, and a row is touched only when its user's object changed (the store
// keeps an unchanged user's object). The client's events only feed the event log.
//
// URL parameters: user (connect at once as this user), status, invisible=1, channel (default "demo"),
// api_key (default "demo-key"), base_url (default: this page's origin).
import init, { Client, createPresenceStore } from './pkg/presence_client.js';
import { relativeTime, clockTime } from './time.js';

const DEMO_USERS = ['alice', 'bob', 'carol', 'dave', 'erin'];
const CHANNEL_TYPE = 'messaging';
const LOG_LIMIT = 200;

const params = new URLSearchParams(location.search);
const config = {
  apiKey: params.get('api_key') || 'demo-key',
  baseURL: params.get('base_url') || location.origin,
  channelId: params.get('channel') || 'demo',
};

const $ = (selector, root = document) => root.querySelector(selector);
const el = {
  badge: $('[data-testid="connection-badge"]'),
  signIn: $('#sign-in'),
  signInForm: $('#sign-in-form'),
  signInError: $('[data-testid="sign-in-error"]'),
  datalist: $('#demo-users'),
  chips: $('#user-chips'),
  me: $('#me'),
  meName: $('[data-testid="me-name"]'),
  meId: $('[data-testid="me-id"]'),
  meOnline: $('[data-testid="me-online"]'),
  meConnection: $('[data-testid="me-connection"]'),
  meLastActive: $('[data-testid="me-last-active"]'),
  meError: $('[data-testid="me-error"]'),
  statusForm: $('#status-form'),
  invisibleToggle: $('#invisible-toggle'),
  visibleTo: $('#presence-visible-to'),
  disconnect: $('#disconnect'),
  rosterEmpty: $('[data-testid="roster-empty"]'),
  channelGroup: $('[data-testid="channel-group"]'),
  channelName: $('[data-testid="channel-name"]'),
  channelList: $('[data-testid="channel-members"]'),
  queryGroup: $('[data-testid="query-group"]'),
  queryList: $('[data-testid="query-users"]'),
  log: $('[data-testid="event-log"]'),
  logClear: $('#log-clear'),
  rowTemplate: $('#user-row'),
};

// ----- session state -----

/** The current sign-in, or null. A new one (with its own Client and store) is made for every connect. */
let session = null;
/** Rendered roster rows, by user id (each user appears once), and the user object each was last painted from. */
const rows = new Map();
const painted = new Map();

// ----- connection state -----

const CONNECTION_TEXT = {
  offline: 'offline',
  connecting: 'connecting…',
  connected: 'connected',
  reconnecting: 'reconnecting…',
};
/** The badge's state for the store's connection. */
const BADGE = { disconnected: 'offline', connecting: 'connecting', connected: 'connected', reconnecting: 'reconnecting' };

function setConnection(state) {
  el.badge.dataset.connection = state;
  $('.conn-text', el.badge).textContent = CONNECTION_TEXT[state];
  el.me.dataset.connection = state;
  el.meConnection.textContent = CONNECTION_TEXT[state];
  el.meConnection.dataset.connection = state;
  document.body.dataset.connection = state;
}

// ----- rendering -----

function hue(id) {
  let h = 0;
  for (const ch of id) h = (h * 31 + ch.codePointAt(0)) % 360;
  return h;
}

function initials(user) {
  const source = (user.name || user.id || '?').trim();
  const parts = source.split(/\s+/).filter(Boolean);
  const letters = parts.length > 1 ? parts[0][0] + parts[1][0] : source.slice(0, 2);
  return letters.toUpperCase();
}

function paintAvatar(avatar, user) {
  avatar.style.setProperty('--hue', hue(user.id));
  $('.initials', avatar).textContent = initials(user);
}

function setAttr(node, name, value) {
  if (node.getAttribute(name) !== value) node.setAttribute(name, value);
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function setTime(node, iso, prefix) {
  if (!iso) {
    node.removeAttribute('datetime');
    delete node.dataset.prefix;
    setText(node, prefix ? 'never active' : '—');
    node.title = '';
    return;
  }
  setAttr(node, 'datetime', iso);
  node.dataset.prefix = prefix;
  node.title = new Date(iso).toLocaleString();
  setText(node, prefix + relativeTime(iso));
}

/** Writes one user's state into their row, unless the row shows this very object already. */
function paintRow(row, user) {
  if (painted.get(user.id) === user) return;
  painted.set(user.id, user);
  const online = user.online === true;
  const status = typeof user.status === 'string' ? user.status : '';
  setAttr(row, 'data-user', user.id);
  setAttr(row, 'data-online', String(online));
  setAttr(row, 'data-status', status);
  paintAvatar($('.avatar', row), user);
  setText($('.name', row), user.name || user.id);
  setText($('.presence', row), online ? 'Online' : 'Offline');
  const statusNode = $('.status', row);
  setText(statusNode, status);
  statusNode.hidden = status === '';
  setTime($('.last-active', row), user.last_active, 'last active ');
}

function byName(a, b) {
  const an = (a.name || a.id).toLowerCase();
  const bn = (b.name || b.id).toLowerCase();
  return an < bn ? -1 : an > bn ? 1 : 0;
}

/** Rebuilds the two lists from the snapshot's users (membership), reusing rows so state changes stay in place. */
function renderRoster(users) {
  if (!session || !session.listed) return;
  const members = [...session.members].filter((id) => id !== session.userId && users.has(id));
  const others = [...session.queried].filter(
    (id) => id !== session.userId && !session.members.has(id) && users.has(id),
  );
  fillList(el.channelList, members.map((id) => users.get(id)).sort(byName));
  fillList(el.queryList, others.map((id) => users.get(id)).sort(byName));
  el.channelGroup.hidden = false;
  el.queryGroup.hidden = false;
  el.rosterEmpty.hidden = true;
  for (const [list, ids] of [[el.channelList, members], [el.queryList, others]]) {
    list.dataset.empty = String(ids.length === 0);
  }
}

function fillList(list, list_users) {
  let previous = null;
  for (const user of list_users) {
    let row = rows.get(user.id);
    if (!row) {
      row = el.rowTemplate.content.firstElementChild.cloneNode(true);
      rows.set(user.id, row);
    }
    paintRow(row, user);
    const expected = previous ? previous.nextElementSibling : list.firstElementChild;
    if (expected !== row) list.insertBefore(row, expected);
    previous = row;
  }
  // Drop rows that no longer belong to this list.
  let extra = previous ? previous.nextElementSibling : list.firstElementChild;
  while (extra) {
    const next = extra.nextElementSibling;
    const id = extra.dataset.user;
    if (!list_users.some((u) => u.id === id)) {
      extra.remove();
      if (!extra.isConnected) {
        rows.delete(id);
        painted.delete(id);
      }
    }
    extra = next;
  }
}

function clearRoster() {
  rows.clear();
  painted.clear();
  el.channelList.replaceChildren();
  el.queryList.replaceChildren();
  el.channelGroup.hidden = true;
  el.queryGroup.hidden = true;
  el.rosterEmpty.hidden = false;
}

/** Draws the session from its store's snapshot: the connection, the own card, the roster. */
function paint(current) {
  if (session !== current) return;
  const snapshot = current.store.getSnapshot();
  setConnection(BADGE[snapshot.connection]);
  paintMe();
  renderRoster(snapshot.users);
}

function paintMe() {
  if (!session) return;
  const me = session.store.getSnapshot().me || session.lastMe;
  if (!me) return;
  session.lastMe = me;
  const online = me.online === true;
  const invisible = me.invisible === true;
  const visibleTo = me.privacy_settings?.presence?.visible_to === 'nobody' ? 'nobody' : 'everyone';
  paintAvatar($('.avatar', el.me), me);
  setText(el.meName, me.name || me.id);
  setText(el.meId, me.id);
  setAttr(el.me, 'data-user', me.id);
  setAttr(el.me, 'data-online', String(online));
  setAttr(el.me, 'data-invisible', String(invisible));
  setAttr(el.me, 'data-visible-to', visibleTo);
  const connected = el.me.dataset.connection === 'connected';
  setAttr(el.meOnline, 'data-online', connected ? String(online) : 'unknown');
  setText(
    el.meOnline,
    !connected
      ? 'Unknown until reconnected'
      : online
        ? invisible ? 'Online, invisible — others see you offline'
          : visibleTo === 'nobody' ? 'Online, hidden from everyone — others see you offline' : 'Online'
        : 'Offline',
  );
  setTime(el.meLastActive, me.last_active, '');
  if (el.invisibleToggle.checked !== invisible && !el.invisibleToggle.disabled) {
    el.invisibleToggle.checked = invisible;
  }
  if (el.visibleTo.value !== visibleTo && !el.visibleTo.disabled) el.visibleTo.value = visibleTo;
  const statusInput = $('input[name="status"]', el.statusForm);
  if (document.activeElement !== statusInput && !session.statusDirty) {
    statusInput.value = typeof me.status === 'string' ? me.status : '';
  }
}

// ----- event log -----

function describe(event) {
  const u = event.user;
  switch (event.type) {
    case 'user.presence.changed':
      return u ? `${u.name || u.id} is ${u.online ? 'online' : 'offline'}` : '';
    case 'user.updated': {
      if (!u) return '';
      const status = typeof u.status === 'string' && u.status ? ` · “${u.status}”` : '';
      return `${u.name || u.id} updated${status}`;
    }
    case 'connection.changed':
      return event.online ? 'socket healthy' : 'socket lost, reconnecting';
    case 'connection.recovered':
      return 'reconnected, subscriptions restored';
    default:
      return '';
  }
}

function logEvent(event) {
  const item = document.createElement('li');
  item.dataset.type = event.type;
  if (event.user && typeof event.user.id === 'string') {
    item.dataset.user = event.user.id;
    item.dataset.online = String(event.user.online === true);
  }
  if (typeof event.online === 'boolean') item.dataset.online = String(event.online);
  const time = document.createElement('time');
  const now = new Date();
  time.dateTime = now.toISOString();
  time.textContent = clockTime(now);
  const type = document.createElement('code');
  type.textContent = event.type;
  const text = document.createElement('span');
  text.className = 'what';
  text.textContent = describe(event);
  item.append(time, type, text);
  el.log.prepend(item);
  while (el.log.childElementCount > LOG_LIMIT) el.log.lastElementChild.remove();
  el.log.dataset.count = String(el.log.childElementCount);
}

// ----- errors -----

function showError(node, error) {
  if (!error) {
    node.hidden = true;
    node.textContent = '';
    return;
  }
  const message = error && error.message ? error.message : String(error);
  const code = error && error.code !== undefined ? ` (code ${error.code})` : '';
  const hint = error && error.code === 43 && /development tokens/i.test(message)
    ? ' Start the server with --dev-tokens to sign in from this page.'
    : error && error.code === 17
      ? ' Only members see a messaging channel; the users query still lists everyone.'
      : '';
  node.textContent = message + code + hint;
  node.hidden = false;
}

// ----- connect / disconnect -----

function setUrl(userId, invisible) {
  const url = new URL(location.href);
  url.searchParams.delete('status');
  url.searchParams.delete('invisible');
  if (userId) url.searchParams.set('user', userId);
  else url.searchParams.delete('user');
  if (userId && invisible) url.searchParams.set('invisible', '1');
  history.replaceState(null, '', url);
}

/**
 * Connects as `userId`. `status` and `invisible` go into connectUser's user object when given; left out they keep
 * the stored values.
 */
async function connect(userId, { status, invisible } = {}) {
  if (session) return;
  showError(el.signInError, null);
  const client = new Client(config.apiKey, { baseURL: config.baseURL });
  const store = createPresenceStore(client);
  const current = {
    client,
    store,
    userId,
    subs: [],
    members: new Set(),
    queried: new Set(),
    listed: false,
    lastMe: null,
    statusDirty: false,
  };
  session = current;
  current.unsubscribe = store.subscribe(() => paint(current));
  setSignInBusy(true);

  const on = (type, handler) => current.subs.push(client.on(type, (event) => {
    if (session !== current) return;
    handler(event);
  }));
  for (const type of ['user.presence.changed', 'user.updated', 'connection.changed', 'connection.recovered']) {
    on(type, logEvent);
  }

  const user = { id: userId };
  if (status) user.status = status;
  if (invisible !== undefined) user.invisible = invisible;
  try {
    await client.connectUser(user, client.devToken(userId));
  } catch (error) {
    if (session === current) {
      session = null;
      release(current);
      setConnection('offline');
      setSignInBusy(false);
      showError(el.signInError, error);
    }
    return;
  }
  if (session !== current) return;
  setUrl(userId, client.user && client.user.invisible === true);
  el.signIn.hidden = true;
  el.me.hidden = false;
  setSignInBusy(false);
  paintMe();

  // Which users each list holds; their state is the store's (the client keeps the newest of answers and events).
  const channel = client.channel(CHANNEL_TYPE, config.channelId);
  const watching = channel.watch({ presence: true }).then((state) => {
    if (session !== current) return;
    const members = (state && state.members) || [];
    current.members = new Set(members.map((m) => (m.user && m.user.id) || m.user_id).filter(Boolean));
  });
  const querying = client
    .queryUsers({ id: { $ne: userId } }, [{ field: 'last_active', direction: -1 }], { presence: true, limit: 30 })
    .then((answer) => {
      if (session !== current) return;
      const list = (answer && answer.users) || [];
      current.queried = new Set(list.map((u) => u.id));
    });
  const results = await Promise.allSettled([watching, querying]);
  if (session !== current) return;
  current.listed = true;
  paint(current);
  const failed = results.find((r) => r.status === 'rejected');
  showError(el.meError, failed ? failed.reason : null);
}

function release(current) {
  for (const sub of current.subs) sub.unsubscribe();
  current.subs = [];
  current.unsubscribe();
}

async function disconnect() {
  const current = session;
  if (!current) return;
  el.disconnect.disabled = true;
  try {
    await current.client.disconnectUser();
  } catch (error) {
    showError(el.meError, error);
  } finally {
    release(current);
    session = null;
    el.disconnect.disabled = false;
    clearRoster();
    setConnection('offline');
    el.me.hidden = true;
    el.signIn.hidden = false;
    showError(el.meError, null);
    $('input[name="user"]', el.signInForm).value = current.userId;
    $('input[name="status"]', el.signInForm).value = '';
    $('input[name="invisible"]', el.signInForm).checked = false;
    setUrl(null);
  }
}

function setSignInBusy(busy) {
  for (const control of el.signInForm.elements) control.disabled = busy;
}

// ----- own updates while connected -----

async function saveStatus(status) {
  const current = session;
  if (!current || !current.client.user) return;
  showError(el.meError, null);
  const update = status
    ? { id: current.userId, set: { status } }
    : { id: current.userId, unset: ['status'] };
  try {
    await current.client.partialUpdateUser(update);
    current.statusDirty = false;
    paintMe();
  } catch (error) {
    showError(el.meError, error);
  }
}

async function setInvisible(invisible) {
  const current = session;
  if (!current || !current.client.user) return;
  showError(el.meError, null);
  el.invisibleToggle.disabled = true;
  try {
    await current.client.partialUpdateUser({ id: current.userId, set: { invisible } });
    setUrl(current.userId, invisible);
  } catch (error) {
    showError(el.meError, error);
  } finally {
    el.invisibleToggle.disabled = false;
    paintMe();
  }
}

/** Who may see the user's presence: `privacy_settings.presence.visible_to`, the other privacy settings kept. */
async function setVisibleTo(visibleTo) {
  const current = session;
  if (!current || !current.client.user) return;
  showError(el.meError, null);
  el.visibleTo.disabled = true;
  try {
    const settings = { ...(current.client.user.privacy_settings || {}), presence: { visible_to: visibleTo } };
    await current.client.partialUpdateUser({ id: current.userId, set: { privacy_settings: settings } });
  } catch (error) {
    showError(el.meError, error);
  } finally {
    el.visibleTo.disabled = false;
    paintMe();
  }
}

// ----- wiring -----

function setupSignInForm() {
  for (const id of DEMO_USERS) {
    const option = document.createElement('option');
    option.value = id;
    el.datalist.append(option);
    const chip = document.createElement('button');
    chip.type = 'button';
    chip.className = 'chip';
    chip.textContent = id;
    chip.dataset.testid = `pick-${id}`;
    chip.addEventListener('click', () => {
      $('input[name="user"]', el.signInForm).value = id;
    });
    el.chips.append(chip);
  }
  el.signInForm.addEventListener('submit', (event) => {
    event.preventDefault();
    const form = new FormData(el.signInForm);
    const userId = String(form.get('user') || '').trim();
    if (!userId) return;
    connect(userId, {
      status: String(form.get('status') || '').trim() || undefined,
      invisible: form.get('invisible') === 'on',
    });
  });
}

function setupMeCard() {
  const statusInput = $('input[name="status"]', el.statusForm);
  statusInput.addEventListener('input', () => {
    if (session) session.statusDirty = true;
  });
  el.statusForm.addEventListener('submit', (event) => {
    event.preventDefault();
    saveStatus(statusInput.value.trim());
  });
  el.invisibleToggle.addEventListener('change', () => setInvisible(el.invisibleToggle.checked));
  el.visibleTo.addEventListener('change', () => setVisibleTo(el.visibleTo.value));
  el.disconnect.addEventListener('click', () => disconnect());
  el.logClear.addEventListener('click', () => {
    el.log.replaceChildren();
    el.log.dataset.count = '0';
  });
}

/** Keeps every "… ago" current without re-rendering anything else. */
function tick() {
  for (const node of document.querySelectorAll('time[datetime][data-prefix]')) {
    setText(node, node.dataset.prefix + relativeTime(node.getAttribute('datetime')));
  }
  if (session && session.client.user) paintMe();
}

async function main() {
  el.channelName.textContent = config.channelId;
  setConnection('offline');
  setupSignInForm();
  setupMeCard();
  setInterval(tick, 1000);
  await init();
  document.body.dataset.ready = 'true';

  const userId = (params.get('user') || '').trim();
  if (userId) {
    $('input[name="user"]', el.signInForm).value = userId;
    const invisible = params.get('invisible');
    await connect(userId, {
      status: params.get('status') || undefined,
      invisible: invisible === null ? undefined : invisible === '1' || invisible === 'true',
    });
  }
}

main().catch((error) => {
  showError(el.signInError, error);
  setConnection('offline');
});
