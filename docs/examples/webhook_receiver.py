"""A webhook receiver for the stock back end's notifications.

Verifies every delivery's signature with the Standard Webhooks reference
package (`pip install standardwebhooks`), drops messages it has seen
(deliveries are at least once: a retry carries the same `webhook-id`), and
prints each new message as one JSON line: the CloudEvent, with the
`webhook-id` it came with.

    WEBHOOK_SECRET=whsec_... python webhook_receiver.py 8000

Answers 204 to a delivery it accepted, 400 to one whose signature or
timestamp does not verify (the notifier then retries it, which is right
for a secret that was just rotated, and harmless otherwise).
"""

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

webhook = Webhook(os.environ["WEBHOOK_SECRET"])
seen = set()


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            # Checks webhook-signature against webhook-id, webhook-timestamp
            # and the raw body, and that the timestamp is within 5 minutes.
            event = webhook.verify(body, headers)
        except WebhookVerificationError as e:
            self.send_response(400)
            self.end_headers()
            self.wfile.write(str(e).encode())
            return
        message_id = headers["webhook-id"]
        if message_id not in seen:
            seen.add(message_id)
            print(json.dumps({"webhook_id": message_id, "event": event}), flush=True)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    ThreadingHTTPServer(("127.0.0.1", port), Receiver).serve_forever()
