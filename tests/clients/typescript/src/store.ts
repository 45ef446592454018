// The badge and the bell as a Pinia store: one place that holds the summary, fed by
// the SSE stream, or by 304-aware polling when streams are not to be had.
import { defineStore } from 'pinia';

import {
  type ChatdClient,
  type ChatdError,
  type Schemas,
  type UnreadSummary,
  pollSummary,
  watchSummary,
} from './chatd.js';

type Transport = 'off' | 'live' | 'polling' | 'signed-out';

export const useUnreadStore = defineStore('unread', {
  state: () => ({
    total: 0,
    mutedTotal: 0,
    threads: [] as Schemas['ThreadUnread'][],
    /** The etag of what is shown: a poll sends it, so an unchanged summary is a 304. */
    etag: null as string | null,
    transport: 'off' as Transport,
    polls: 0,
    notModified: 0,
    lastError: null as string | null,
  }),
  actions: {
    show(summary: UnreadSummary, etag: string) {
      this.total = summary.total;
      this.mutedTotal = summary.muted_total;
      this.threads = summary.threads;
      this.etag = etag;
    },
    async poll(client: ChatdClient) {
      const answer = await pollSummary(client, this.etag);
      this.polls += 1;
      if (answer === 'not-modified') {
        this.notModified += 1;
      } else {
        this.show(answer.summary, answer.etag);
      }
    },
    /** Listens over SSE; on TOO_MANY_STREAMS, polls every `pollMs` instead. Returns a stop. */
    live(api: string, client: ChatdClient, pollMs = 3000): () => void {
      let pollTimer: ReturnType<typeof setInterval> | null = null;
      const stream = watchSummary(api, client, {
        onSummary: (event) => {
          this.transport = 'live';
          this.show(event, event.etag);
        },
        onGiveUp: (error: ChatdError) => {
          this.lastError = error.body.code;
          if (error.remedy === 'fall-back') {
            this.transport = 'polling';
            // Starts from the etag the stream last gave: no full answer if nothing changed.
            pollTimer = setInterval(() => void this.poll(client).catch(() => {}), pollMs);
          } else {
            this.transport = 'signed-out';
          }
        },
      });
      return () => {
        stream.close();
        if (pollTimer) clearInterval(pollTimer);
        this.transport = 'off';
      };
    },
  },
});
