// A typed client of chatd's REST gateway, as a Vue frontend would write it: types come
// from the served /openapi.json (openapi-typescript, `npm run types`), calls go through
// openapi-fetch, and every error is read by its `code`, an enum the compiler knows.
import createClient from 'openapi-fetch';
import { EventSource } from 'eventsource';

import type { components, paths } from './chatd-api.js';

export type Schemas = components['schemas'];
export type UnreadSummary = Schemas['UnreadSummary'];
export type SummaryEvent = Schemas['SummaryEvent'];
export type ApiErrorBody = Schemas['Error'];
export type ErrorCode = ApiErrorBody['code'];

/** What a client does about each reason. A `Record` over the enum: when chatd documents
 * a new reason, this stops compiling until someone decides what it means here. */
export type Remedy = 'retry' | 'fix-request' | 'sign-in' | 'tell-user' | 'fall-back';
export const REMEDY: Record<ErrorCode, Remedy> = {
  INVALID_ARGUMENT: 'fix-request',
  TOKEN_MISSING: 'sign-in',
  TOKEN_INVALID: 'sign-in',
  TOKEN_EXPIRED: 'sign-in',
  TICKET_INVALID: 'retry',
  ROLE_NOT_ALLOWED: 'tell-user',
  RELATION_NOT_FOUND: 'tell-user',
  RELATION_NOT_ACTIVE: 'tell-user',
  CONTACT_ACCESS_LOCKED: 'tell-user',
  INQUIRY_NOT_FOUND: 'tell-user',
  THREAD_NOT_FOUND: 'tell-user',
  THREAD_NOT_WRITABLE: 'tell-user',
  PARTICIPANTS_IMMUTABLE: 'fix-request',
  MESSAGE_NOT_FOUND: 'tell-user',
  NOT_MESSAGE_SENDER: 'tell-user',
  MESSAGE_DELETED: 'tell-user',
  MARK_UNREAD_TOO_FAR: 'tell-user',
  RATE_LIMITED: 'retry',
  TOO_MANY_STREAMS: 'fall-back',
  STREAM_TOO_SLOW: 'retry',
  // StreamEvents only (services): resume from ErrorInfo's oldest_position and reconcile.
  EVENTS_EXPIRED: 'fix-request',
  DATABASE_UNAVAILABLE: 'retry',
  STORAGE_FULL: 'tell-user',
  INTERNAL: 'tell-user',
  MALFORMED_REQUEST: 'fix-request',
  REQUEST_TOO_LARGE: 'fix-request',
  DEADLINE_EXCEEDED: 'retry',
  HEADERS_TOO_LARGE: 'fix-request',
  NOT_FOUND: 'fix-request',
  METHOD_NOT_ALLOWED: 'fix-request',
  PAYLOAD_TOO_LARGE: 'fix-request',
  UNSUPPORTED_MEDIA_TYPE: 'fix-request',
  BAD_REQUEST: 'fix-request',
  UPSTREAM_UNAVAILABLE: 'retry',
  UPSTREAM_TIMEOUT: 'retry',
  URI_TOO_LONG: 'fix-request',
  REQUEST_TIMEOUT: 'retry',
  CORS_NOT_ALLOWED: 'fix-request',
};

export class ChatdError extends Error {
  constructor(
    readonly status: number,
    readonly body: ApiErrorBody,
  ) {
    super(`${status} ${body.code}: ${body.message}`);
  }
  get remedy(): Remedy {
    return REMEDY[this.body.code];
  }
}

/** Unwraps an openapi-fetch answer: the data, or a ChatdError with chatd's reason. */
export function ok<T>(answer: { data?: T; error?: unknown; response: Response }): T {
  if (answer.data !== undefined) return answer.data;
  throw new ChatdError(answer.response.status, answer.error as ApiErrorBody);
}

export function chatdClient(api: string, token: string) {
  return createClient<paths>({
    baseUrl: api,
    headers: { Authorization: `Bearer ${token}` },
  });
}
export type ChatdClient = ReturnType<typeof chatdClient>;

/** One poll of the badge with the etag last seen: a 304 costs no body. */
export async function pollSummary(
  client: ChatdClient,
  etag: string | null,
): Promise<{ summary: UnreadSummary; etag: string } | 'not-modified'> {
  const answer = await client.GET('/api/v1/chat/unread-summary/', {
    params: { header: etag ? { 'If-None-Match': etag } : {} },
  });
  if (answer.response.status === 304) return 'not-modified';
  const summary = ok(answer);
  return { summary, etag: answer.response.headers.get('ETag') ?? '' };
}

export interface StreamHandlers {
  onSummary(event: SummaryEvent): void;
  /** The server's reason the stream cannot open or has ended, when retrying will not help. */
  onGiveUp(error: ChatdError): void;
}

/** The badge over Server-Sent Events, opened with a one-use ticket. A dropped connection
 * is reopened after a growing delay with a fresh ticket (EventSource's own retry would
 * reuse the spent one); a server's reason (the mint's answer, or a `stream-error` event)
 * decides: TOO_MANY_STREAMS and an ended session give up, so nothing loops. */
export function watchSummary(api: string, client: ChatdClient, handlers: StreamHandlers) {
  let closed = false;
  let current: EventSource | null = null;
  let timer: ReturnType<typeof setTimeout> | null = null;
  const retryFirstMs = 250;
  const retryMaxMs = 30_000;

  const open = async (retryMs: number): Promise<void> => {
    const retry = () => {
      if (!closed) timer = setTimeout(() => void open(Math.min(retryMs * 2, retryMaxMs)), retryMs);
    };
    const decide = (error: ChatdError) => (error.remedy === 'retry' ? retry() : handlers.onGiveUp(error));
    let ticket: string;
    try {
      ({ ticket } = ok(await client.POST('/api/v1/chat/unread-summary/stream-ticket')));
    } catch (error) {
      return error instanceof ChatdError ? decide(error) : retry();
    }
    if (closed) return;
    const events = new EventSource(`${api}/api/v1/chat/unread-summary/stream?ticket=${ticket}`);
    current = events;
    events.addEventListener('summary', (event: MessageEvent<string>) => {
      retryMs = retryFirstMs;
      handlers.onSummary(JSON.parse(event.data) as SummaryEvent);
    });
    events.addEventListener('stream-error', (event: MessageEvent<string>) => {
      events.close();
      decide(new ChatdError(0, JSON.parse(event.data) as ApiErrorBody));
    });
    events.addEventListener('error', () => {
      events.close();
      retry();
    });
  };
  void open(retryFirstMs);
  return {
    close() {
      closed = true;
      if (timer) clearTimeout(timer);
      current?.close();
    },
  };
}
