// The example run end to end against a live chatd (tests/clients/run does, in CI): a
// student opens the chat and writes; the tutor's store hears it over SSE and by polling
// with etags; the tutor lists the inbox, catches up on the thread, reads it; a refusal is
// read by its code. It checks each step and exits non-zero on the first surprise.
import { createPinia, setActivePinia } from 'pinia';

import { ChatdError, chatdClient, ok } from './chatd.js';
import { useUnreadStore } from './store.js';

const api = process.env.CHATD_API ?? 'http://127.0.0.1:8080';
const relationId = Number(process.env.RELATION_ID ?? '920');
const tutor = chatdClient(api, required('TUTOR_TOKEN'));
const student = chatdClient(api, required('STUDENT_TOKEN'));

function required(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`set ${name}`);
  return value;
}

function check(condition: boolean, what: string): asserts condition {
  if (!condition) throw new Error(`typescript client example: ${what}`);
}

type Store = ReturnType<typeof useUnreadStore>;

/** Resolves once the store shows what `shown` asks for; fails after 10 s. */
function until(store: Store, what: string, shown: (store: Store) => boolean): Promise<void> {
  if (shown(store)) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      stop();
      reject(new Error(`typescript client example: waited 10 s for ${what}`));
    }, 10_000);
    const stop = store.$subscribe(() => {
      if (shown(store)) {
        clearTimeout(timer);
        stop();
        resolve();
      }
    });
  });
}

async function say(threadId: number, body: string) {
  return ok(
    await student.POST('/api/v1/chat/threads/{thread_id}/messages/', {
      params: { path: { thread_id: threadId } },
      body: { body, client_message_id: crypto.randomUUID() },
    }),
  );
}

async function main() {
  setActivePinia(createPinia());
  const badge = useUnreadStore();

  // The chat button: EnsureThread takes exactly one of relation_id and inquiry_id.
  const thread = ok(await student.POST('/api/v1/chat/threads/negotiation/', { body: { relation_id: relationId } }));
  check(thread.is_writable, 'the thread is writable');
  check(!Number.isNaN(Date.parse(thread.created_at)), `created_at ${thread.created_at}`);

  // Polling: a full answer, then 304s while nothing changes.
  await badge.poll(tutor);
  const before = badge.total;
  await badge.poll(tutor);
  // Read through a function: each poll changes it behind the compiler's narrowing.
  const notModified = () => badge.notModified;
  check(notModified() === 1, 'an unchanged summary came back whole');

  // Pushed: the store listens over SSE and hears the student's message.
  const stop = badge.live(api, tutor);
  await until(badge, 'the stream', (s) => s.transport === 'live');
  const sent = await say(thread.thread_id, 'Hello from TypeScript');
  await until(badge, 'the pushed message', (s) => s.total === before + 1);
  stop();
  // The etag the stream gave is the one polling would: nothing changed, so 304.
  await badge.poll(tutor);
  check(notModified() === 2, "the stream's etag is not the polling etag");

  // The inbox, page by page (the token is opaque: pass it back as it came).
  const inbox = [];
  let page_token: string | undefined;
  do {
    const page = ok(
      await tutor.GET('/api/v1/chat/threads/', {
        params: { query: page_token ? { limit: 1, page_token } : { limit: 1 } },
      }),
    );
    inbox.push(...page.threads);
    page_token = page.next_page_token ?? undefined;
  } while (page_token);
  check(
    inbox.some((t) => t.thread_id === thread.thread_id && t.last_message_preview === 'Hello from TypeScript'),
    'the thread heads the inbox with its preview',
  );

  // Catching up after a reconnect: everything after the last seq seen, oldest first.
  const caughtUp = ok(
    await tutor.GET('/api/v1/chat/threads/{thread_id}/messages/', {
      params: { path: { thread_id: thread.thread_id }, query: { after_seq: sent.seq - 1 } },
    }),
  );
  check(caughtUp.messages[0]?.seq === sent.seq, 'catching up starts after the seq given');

  const read = ok(
    await tutor.POST('/api/v1/chat/threads/{thread_id}/read/', {
      params: { path: { thread_id: thread.thread_id } },
      body: {},
    }),
  );
  check(read.unread_count === 0, `${read.unread_count} unread after reading`);

  // A refusal, read by its code: the compiler knows every code chatd may send.
  try {
    ok(await tutor.POST('/api/v1/chat/threads/negotiation/', { body: { relation_id: relationId + 1 } }));
    check(false, 'a thread of an unknown relation was opened');
  } catch (error) {
    check(error instanceof ChatdError, `${error}`);
    check(error.body.code === 'RELATION_NOT_FOUND', error.message);
    check(error.remedy === 'tell-user', error.remedy);
    console.log(`refused as documented: ${error.message}`);
  }
  console.log(`typescript client example: ok (thread ${thread.thread_id}, total ${read.total})`);
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
