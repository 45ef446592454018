// Compile-time checks of the generated types: if the served /openapi.json stops saying
// these things, `tsc --strict` fails here (an unused @ts-expect-error is an error).
import type { Schemas } from './chatd.js';

// EnsureThread takes relation_id or inquiry_id; an empty body does not typecheck.
// @ts-expect-error: neither id
export const neither: Schemas['EnsureThreadRequest'] = {};
export const byRelation: Schemas['EnsureThreadRequest'] = { relation_id: 10 };
export const byInquiry: Schemas['EnsureThreadRequest'] = { inquiry_id: 5 };

// A thread always has its created_at.
export const createdAt = (thread: Schemas['Thread']): string => thread.created_at;

// The stream's summaries carry the etag a poll would send.
export const etagOf = (event: Schemas['SummaryEvent']): string => event.etag;
