// A webhook receiver for chatd's events, as a notification service would write one in
// TypeScript: chatd posts CloudEvents batches signed as the Standard Webhooks
// specification says, and the `standardwebhooks` package (npm) verifies them.
// Verifies every POST (401 to one it cannot verify: chatd retries it), prints each
// event's type, and exits 0 once it has verified an event of type WAIT_FOR_TYPE with
// the body WAIT_FOR_BODY (run by tests/clients/webhooks).
//
//   WEBHOOK_SECRET=whsec_... PORT=8092 node dist/webhook.js
import { createServer } from "node:http";
import { Webhook } from "standardwebhooks";

interface CloudEvent {
  id: string;
  type: string;
  position: number;
  subject?: string;
  data: { body?: string } | null;
}

const secret = process.env["WEBHOOK_SECRET"];
if (!secret) throw new Error("set WEBHOOK_SECRET (whsec_...)");
const webhook = new Webhook(secret);
const waitForType = process.env["WAIT_FOR_TYPE"] ?? "chat.message.created";
const waitForBody = process.env["WAIT_FOR_BODY"] ?? "";
const seen = new Set<string>();

const server = createServer((request, response) => {
  const chunks: Buffer[] = [];
  request.on("data", (chunk: Buffer) => chunks.push(chunk));
  request.on("end", () => {
    const body = Buffer.concat(chunks).toString("utf8");
    const headers: Record<string, string> = {};
    for (const [name, value] of Object.entries(request.headers)) {
      if (typeof value === "string") headers[name.toLowerCase()] = value;
    }
    let batch: CloudEvent[];
    try {
      // Checks the signature and that webhook-timestamp is recent (replays fail).
      batch = webhook.verify(body, headers) as CloudEvent[];
    } catch (error) {
      console.log(`refused: ${String(error)}`);
      response.writeHead(401).end();
      return;
    }
    let done = false;
    for (const event of batch) {
      // At least once: the same event may come again; its id says so.
      if (seen.has(event.id)) continue;
      seen.add(event.id);
      console.log(`verified ${event.type} position ${event.position}`);
      if (event.type === waitForType && event.data?.body === waitForBody) done = true;
    }
    response.writeHead(204).end();
    if (done) {
      console.log("received the awaited event");
      server.close();
      server.closeAllConnections();
    }
  });
});

server.listen(Number(process.env["PORT"] ?? "8092"), "127.0.0.1");
