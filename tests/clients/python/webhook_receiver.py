"""A webhook receiver for chatd's events, as a notification service would write one.

chatd posts CloudEvents batches signed as the Standard Webhooks specification says;
the `standardwebhooks` package (PyPI) verifies them. This receiver verifies every
POST, answers 401 to one it cannot verify (chatd retries it), prints each event's
type, and exits 0 once it has verified an event of type WAIT_FOR_TYPE whose data has
the body WAIT_FOR_BODY (run by tests/clients/webhooks).

    WEBHOOK_SECRET=whsec_... PORT=8091 python3 webhook_receiver.py
"""

import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

webhook = Webhook(os.environ["WEBHOOK_SECRET"])
wait_for_type = os.environ.get("WAIT_FOR_TYPE", "chat.message.created")
wait_for_body = os.environ.get("WAIT_FOR_BODY", "")
seen_ids = set()


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            # Checks the signature and that webhook-timestamp is recent (replays fail).
            batch = webhook.verify(body, headers)
        except WebhookVerificationError as error:
            print(f"refused: {error}", flush=True)
            self.send_response(401)
            self.end_headers()
            return
        done = False
        for event in batch:
            # At least once: the same event may come again; its id says so.
            if event["id"] in seen_ids:
                continue
            seen_ids.add(event["id"])
            print(f"verified {event['type']} position {event['position']}", flush=True)
            data = event.get("data") or {}
            if event["type"] == wait_for_type and data.get("body") == wait_for_body:
                done = True
        self.send_response(204)
        self.end_headers()
        if done:
            print("received the awaited event", flush=True)
            threading.Thread(target=self.server.shutdown).start()

    def log_message(self, *args):
        pass


server = HTTPServer(("127.0.0.1", int(os.environ.get("PORT", "8091"))), Receiver)
server.serve_forever()
sys.exit(0)
