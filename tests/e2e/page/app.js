// The reference page's script: the chat button, the bell and the chat window on chatd's
// REST gateway. It shows the patterns a frontend needs:
// - the bearer token goes in the Authorization header only, never in a URL;
// - pushed updates: EventSource opened with a one-use stream ticket; when it fails, a
//   fresh ticket and a new EventSource after a growing delay (its own retry would reuse
//   the spent ticket), polling instead on TOO_MANY_STREAMS, and no retry once the
//   session has ended;
// - polled updates: fetch with the browser's HTTP cache, which revalidates with
//   If-None-Match, so an unchanged summary costs a 304 and no body;
// - mark read while the chat window is open and the page has focus;
// - delete one's own message (a tombstone stays in place) and mute a thread from the
//   bell: the badge shows `total`, which leaves muted threads out;
// - the open window, live: the thread's events over EventSource (new, edited and
//   deleted messages, "seen" when the peer reads, "typing…", the composer enabled or
//   disabled as the thread allows), resumed after a drop from the last version shown,
//   so nothing is missed or shown twice; typing announced at most every 2 s.
'use strict';

const $ = (id) => document.getElementById(id);

// What a person reads when the chat is refused, by the error's `code`.
const REASONS = {
  RELATION_NOT_FOUND: 'There is no lesson request between you.',
  RELATION_NOT_ACTIVE: 'The lesson request has not been accepted yet.',
  CONTACT_ACCESS_LOCKED: 'Contact with this student is not open: not unlocked yet, or revoked.',
  THREAD_NOT_WRITABLE: 'This chat is closed.',
  RATE_LIMITED: 'You are sending too fast: wait a moment.',
  TOKEN_EXPIRED: 'Your session has expired: sign in again.',
  TOKEN_INVALID: 'Your session is not valid here: sign in again.',
  STORAGE_FULL: 'Messages cannot be saved right now. Nothing was sent; try again later.',
};

const params = new URLSearchParams(location.search);
const POLL_EVERY_MS = Number(params.get('poll_ms')) || 3000;
const RETRY_MAX_MS = 5000;

let config = null;
let chatThread = null;
let openThreadId = null;
const shownSeqs = new Set();
let pollCount = 0;
let streamsOpened = 0;
// The open window's stream: the last version shown, and whether it is live.
let windowEvents = null;
let windowVersion = 0;
let windowFollowing = false; // a window stream is open, or being reopened after a drop
let windowStreams = 0;
let listFetches = 0;
let peerReadSeq = 0;
let typingTimer = null;
let typingSentAt = 0;

class ApiError extends Error {
  constructor(status, body) {
    super(body?.message ?? `HTTP ${status}`);
    this.status = status;
    this.code = body?.code ?? `HTTP_${status}`;
  }
}

function reasonText(error) {
  return REASONS[error.code] ?? error.message;
}

async function api(method, path, body) {
  const init = { method, headers: { Authorization: `Bearer ${config.token}` } };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const response = await fetch(config.api + path, init);
  const text = await response.text();
  const json = text ? JSON.parse(text) : null;
  if (!response.ok) throw new ApiError(response.status, json);
  return json;
}

function userId() {
  try {
    const payload = config.token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return Number(JSON.parse(atob(payload)).sub);
  } catch {
    return null;
  }
}

// ---- the chat button ---------------------------------------------------------------

async function checkChatButton() {
  const button = $('chat-button');
  const reason = $('chat-reason');
  try {
    chatThread = await api('POST', '/threads/negotiation/', { relation_id: config.relation });
    button.disabled = false;
    reason.hidden = true;
    reason.removeAttribute('data-code');
  } catch (error) {
    disableChat(error);
  }
}

function disableChat(error) {
  const button = $('chat-button');
  const reason = $('chat-reason');
  button.disabled = true;
  reason.hidden = false;
  reason.textContent = reasonText(error);
  reason.dataset.code = error.code;
}

// ---- the chat window ---------------------------------------------------------------

async function openChat(threadId) {
  if (openThreadId !== threadId) closeWindowStream();
  openThreadId = threadId;
  shownSeqs.clear();
  $('messages').replaceChildren();
  $('chat-window').hidden = false;
  $('chat-title').textContent = `Thread ${threadId}`;
  $('send-error').hidden = true;
  $('compose').focus();
  // The window starts from the stream's snapshot, which loads the messages.
  openWindowStream(0);
}

async function refreshMessages() {
  if (openThreadId === null) return;
  const page = await api('GET', `/threads/${openThreadId}/messages/?limit=50`);
  listFetches += 1;
  $('list-fetches').textContent = listFetches;
  peerReadSeq = Math.max(peerReadSeq, page.peer_last_read_seq);
  for (const message of page.messages.sort((a, b) => a.seq - b.seq)) showMessage(message);
  showSeen();
}

// Shows a message as it is now (new, edited, or a tombstone), in seq order.
function showMessage(message) {
  const mine = message.sender_id === userId();
  const list = $('messages');
  const existing = list.querySelector(`li[data-seq="${message.seq}"]`);
  if (existing?.classList.contains('deleted')) return;
  shownSeqs.add(message.seq);
  const item = existing ?? document.createElement('li');
  item.className = mine ? 'message mine' : 'message';
  item.dataset.seq = message.seq;
  if (message.deleted) {
    item.classList.add('deleted');
    item.textContent = '(deleted)';
  } else {
    item.textContent = message.body;
    if (message.edited_at) item.classList.add('edited');
    if (mine) {
      const remove = document.createElement('button');
      remove.type = 'button';
      remove.className = 'delete';
      remove.setAttribute('aria-label', 'Delete message');
      remove.addEventListener('click', () => deleteMessage(message.seq));
      item.append(remove);
    }
  }
  if (!existing) {
    const after = [...list.children].find((li) => Number(li.dataset.seq) > message.seq);
    list.insertBefore(item, after ?? null);
    list.scrollTop = list.scrollHeight;
  }
  showSeen();
}

// Deleting one's message: the answer is its tombstone, shown in its place.
async function deleteMessage(seq) {
  if (openThreadId === null) return;
  const tombstone = await api('DELETE', `/threads/${openThreadId}/messages/${seq}/`);
  showMessage(tombstone);
}

// "Seen": one's own messages up to the peer's horizon.
function showSeen() {
  for (const item of $('messages').querySelectorAll('li.mine')) {
    item.classList.toggle('seen', Number(item.dataset.seq) <= peerReadSeq);
  }
}

function showTyping(until) {
  const shown = $('typing');
  clearTimeout(typingTimer);
  const left = new Date(until).getTime() - Date.now();
  shown.hidden = left <= 0;
  if (left > 0) typingTimer = setTimeout(() => { shown.hidden = true; }, left);
}

// The composer follows what the thread allows now; the button says why when it does not.
function showWritable(writable) {
  $('compose').disabled = !writable;
  $('send').disabled = !writable;
  checkChatButton().catch(() => {});
}

// ---- the open window's stream ------------------------------------------------------

function closeWindowStream() {
  windowEvents?.close();
  windowEvents = null;
  windowFollowing = false;
}

// One change of the thread, in version order; a snapshot (re)loads the messages.
function onThreadEvent(event) {
  windowVersion = event.version;
  const me = config.role;
  if (event.snapshot) {
    peerReadSeq = event.snapshot.peer_last_read_seq;
    showWritable(event.snapshot.writable);
    if (event.snapshot.reset) $('messages').replaceChildren();
    refreshMessages().then(markReadIfFocused).catch(() => {});
  } else if (event.message_created) {
    showMessage(event.message_created);
    $('typing').hidden = true;
    if (event.message_created.sender_id !== userId()) markReadIfFocused().catch(() => {});
  } else if (event.message_edited) {
    showMessage(event.message_edited);
  } else if (event.message_deleted) {
    showMessage(event.message_deleted);
  } else if (event.read_moved) {
    if (event.read_moved.side !== me) {
      peerReadSeq = event.read_moved.last_read_seq;
      showSeen();
    }
  } else if (event.typing) {
    if (event.typing.side !== me) showTyping(event.typing.until);
  } else if (event.thread_state) {
    showWritable(event.thread_state.writable);
  }
}

// Opens the window's stream after `after` (0: a snapshot first) with a fresh ticket;
// after a drop, again from the last version shown, after a growing delay.
async function openWindowStream(after, retryMs = RETRY_FIRST_MS) {
  const threadId = openThreadId;
  windowFollowing = true;
  const retry = () => {
    setTimeout(() => {
      if (openThreadId === threadId) openWindowStream(windowVersion, Math.min(retryMs * 2, RETRY_MAX_MS));
    }, retryMs);
  };
  let ticket;
  try {
    ({ ticket } = await api('POST', '/unread-summary/stream-ticket'));
  } catch (error) {
    if (!(error instanceof ApiError) || streamFailure(error.code) === 'retry') retry();
    else windowFollowing = false;
    return;
  }
  if (openThreadId !== threadId) return;
  const events = new EventSource(
    `${config.api}/threads/${threadId}/events?ticket=${ticket}&after_version=${after}`,
  );
  windowEvents = events;
  events.addEventListener('open', () => {
    windowStreams += 1;
    $('window-streams').textContent = windowStreams;
  });
  events.addEventListener('thread-event', (event) => {
    retryMs = RETRY_FIRST_MS;
    onThreadEvent(JSON.parse(event.data));
  });
  events.addEventListener('stream-error', (event) => {
    events.close();
    const error = new ApiError(0, JSON.parse(event.data));
    if (streamFailure(error.code) === 'retry') retry();
    else windowFollowing = false;
  });
  events.addEventListener('error', () => {
    events.close();
    retry();
  });
}

// Typing: announced on input, at most every 2 s (the server would send nothing more).
function announceTyping() {
  if (openThreadId === null || Date.now() - typingSentAt < 2000) return;
  typingSentAt = Date.now();
  api('POST', `/threads/${openThreadId}/typing/`).catch(() => {});
}

// Reading happens where a person can see it: the window is open and the page has focus.
async function markReadIfFocused() {
  if (openThreadId === null || !document.hasFocus()) return;
  const state = await api('POST', `/threads/${openThreadId}/read/`, {});
  showBadge(state.total);
}

async function send() {
  const compose = $('compose');
  const body = compose.value.trim();
  if (!body || openThreadId === null) return;
  const clientMessageId = crypto.randomUUID();
  try {
    const message = await api('POST', `/threads/${openThreadId}/messages/`, {
      body,
      client_message_id: clientMessageId,
    });
    compose.value = '';
    showMessage(message);
  } catch (error) {
    const shown = $('send-error');
    shown.hidden = false;
    shown.textContent = reasonText(error);
    shown.dataset.code = error.code;
    if (error.status === 400 || error.status === 403) {
      compose.disabled = true;
      $('send').disabled = true;
      disableChat(error);
    }
  }
}

// ---- the bell ----------------------------------------------------------------------

function showBadge(total) {
  const badge = $('badge');
  badge.hidden = total === 0;
  badge.textContent = String(total);
}

function onSummary(summary) {
  showBadge(summary.total);
  const menu = $('bell-menu');
  const items = summary.threads.map((thread) => {
    const item = document.createElement('li');
    item.dataset.threadId = thread.thread_id;
    const count = document.createElement('span');
    count.className = 'count';
    count.textContent = thread.unread_count;
    // Muting from the bell: the thread stays listed, the badge leaves it out.
    const mute = document.createElement('button');
    mute.type = 'button';
    mute.className = 'mute';
    mute.setAttribute('aria-label', thread.muted ? 'Unmute thread' : 'Mute thread');
    mute.addEventListener('click', (event) => {
      event.stopPropagation();
      toggleMute(thread).catch(() => {});
    });
    if (thread.muted) item.classList.add('muted');
    item.append(count, thread.last_message_preview ?? '', mute);
    item.addEventListener('click', () => {
      menu.hidden = true;
      openChat(thread.thread_id);
    });
    return item;
  });
  if (items.length === 0) {
    const empty = document.createElement('li');
    empty.className = 'empty';
    empty.textContent = 'No unread messages';
    items.push(empty);
  }
  menu.replaceChildren(...items);
  // New messages in the open thread, when it has no stream of its own (refused, not
  // retried): show them, and read them if the page has focus. A stream being reopened
  // catches up by itself, from its last version.
  if (!windowFollowing && summary.threads.some((thread) => thread.thread_id === openThreadId)) {
    refreshMessages().then(markReadIfFocused).catch(() => {});
  }
}

async function toggleMute(thread) {
  const state = thread.muted
    ? await api('DELETE', `/threads/${thread.thread_id}/mute/`)
    : await api('PUT', `/threads/${thread.thread_id}/mute/`, {});
  showBadge(state.total);
}

function setTransportState(state) {
  $('transport-state').textContent = state;
}

// Pushed: a fresh ticket for every stream. What happens when a stream cannot open or
// ends depends on why, read from the error's `code` (the mint's JSON answer, or the
// stream's own `stream-error` event); a dropped connection (EventSource's `error`) has
// no reason and is retried. Retries back off exponentially, so nothing loops:
// - TOO_MANY_STREAMS: this user already holds the streams they may (other tabs); poll;
// - an ended session (TOKEN_EXPIRED, TOKEN_INVALID): stop, the user signs in again;
// - anything else: retry after a growing delay, reset once a summary arrives.
const RETRY_FIRST_MS = 250;

function streamFailure(code) {
  if (code === 'TOO_MANY_STREAMS') return 'poll';
  if (code === 'TOKEN_EXPIRED' || code === 'TOKEN_INVALID') return 'stop';
  return 'retry';
}

async function openStream(retryMs = RETRY_FIRST_MS) {
  setTransportState('connecting');
  const retry = () => {
    setTransportState('reconnecting');
    setTimeout(() => openStream(Math.min(retryMs * 2, RETRY_MAX_MS)), retryMs);
  };
  const giveUp = (error) => {
    if (streamFailure(error.code) === 'poll') {
      poll();
    } else {
      setTransportState('signed out');
      showSessionEnded(error);
    }
  };
  let ticket;
  try {
    ({ ticket } = await api('POST', '/unread-summary/stream-ticket'));
  } catch (error) {
    if (error instanceof ApiError && streamFailure(error.code) !== 'retry') {
      giveUp(error);
    } else {
      retry();
    }
    return;
  }
  const events = new EventSource(`${config.api}/unread-summary/stream?ticket=${ticket}`);
  events.addEventListener('open', () => {
    streamsOpened += 1;
    $('streams-opened').textContent = streamsOpened;
  });
  events.addEventListener('summary', (event) => {
    retryMs = RETRY_FIRST_MS;
    setTransportState('live');
    onSummary(JSON.parse(event.data));
  });
  // The server's reason, sent just before it ends the stream.
  events.addEventListener('stream-error', (event) => {
    events.close();
    const error = new ApiError(0, JSON.parse(event.data));
    if (streamFailure(error.code) === 'retry') {
      retry();
    } else {
      giveUp(error);
    }
  });
  // A lost connection: EventSource's own retry would reuse the spent ticket.
  events.addEventListener('error', () => {
    events.close();
    retry();
  });
}

function showSessionEnded(error) {
  const notice = $('session-notice');
  notice.dataset.code = error.code;
  notice.textContent = reasonText(error);
  notice.hidden = false;
}

// Polled: the browser's cache keeps the last summary and its ETag and asks with
// If-None-Match; a 304 reaches this code as the cached 200.
async function poll() {
  try {
    const response = await fetch(`${config.api}/unread-summary/`, {
      headers: { Authorization: `Bearer ${config.token}` },
    });
    pollCount += 1;
    $('poll-count').textContent = pollCount;
    if (response.ok) {
      setTransportState('polling');
      onSummary(await response.json());
    }
  } catch {
    setTransportState('reconnecting');
  }
  setTimeout(poll, POLL_EVERY_MS);
}

// ---- signing in --------------------------------------------------------------------

async function start() {
  $('sign-in').hidden = true;
  $('profile').hidden = false;
  $('bell').hidden = false;
  $('who').textContent = `${config.role} ${userId()}`;
  $('chat-button').textContent = config.role === 'tutor' ? 'Chat with student' : 'Chat with tutor';
  await checkChatButton();
  if (config.transport === 'poll' || !('EventSource' in window)) {
    poll();
  } else {
    openStream();
  }
}

$('sign-in').addEventListener('submit', (event) => {
  event.preventDefault();
  config = {
    api: $('api').value.replace(/\/$/, ''),
    token: $('token').value.trim(),
    role: $('role').value,
    relation: Number($('relation').value),
    transport: $('transport').value,
  };
  // The tab keeps the session across reloads; the token stays out of the URL.
  sessionStorage.setItem('chat-config', JSON.stringify(config));
  start();
});
$('chat-button').addEventListener('click', () => chatThread && openChat(chatThread.thread_id));
$('send').addEventListener('click', send);
$('compose').addEventListener('input', announceTyping);
$('bell').addEventListener('click', () => {
  $('bell-menu').hidden = !$('bell-menu').hidden;
});
$('chat-window').addEventListener('focusin', () => markReadIfFocused().catch(() => {}));
window.addEventListener('focus', () => markReadIfFocused().catch(() => {}));

// The form may be prefilled from the page's URL (nothing secret: the token is typed).
for (const field of ['api', 'role', 'relation', 'transport']) {
  if (params.has(field)) $(field).value = params.get(field);
}

const saved = sessionStorage.getItem('chat-config');
if (saved) {
  config = JSON.parse(saved);
  start();
}
