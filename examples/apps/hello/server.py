"""The demo command app: answers every request with a JSON greeting."""
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # http.server writes the head and the body separately; with Nagle on, the body of
    # every answer after the first on a kept-alive connection waits ~40 ms for an ACK.
    disable_nagle_algorithm = True

    def do_GET(self):
        body = json.dumps({
            "message": os.environ.get("GREETING", "Hello"),
            "path": self.path,
            "base": self.headers.get("x-base"),
            "requestId": self.headers.get("x-request-id"),
            "pid": os.getpid(),
        }).encode() + b"\n"
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        pass


class Server(ThreadingHTTPServer):
    # socketserver listens with a backlog of 5: when the gateway opens more connections
    # at once under load, the kernel drops the rest's SYNs and each waits out a 1-second
    # retransmit (p99 ~1 s at 16 clients; 6 ms with this).
    request_queue_size = 1024


Server(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
