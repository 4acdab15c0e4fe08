"""The test server of the traffic scenarios (HTTP/1.1).

Every answer is one line: `pod=<POD_NAME> path=<path> host=<Host>` then
` h:<name>=<value>` for each request header starting with `x-`.

Chosen behaviour, per request by query parameter or per pod by environment
(the query wins):
  status=N   / STATUS   answer with status N
  delay=MS   / DELAY_MS wait MS milliseconds first
  grpc=N     / GRPC     answer `grpc-status: N` (trailers-only style)
With TLS_CERT and TLS_KEY set it serves HTTPS.
GET /__stats answers `count=N shadow=M`: requests seen (stats excluded) and
how many of them carried a `-shadow` Host (Istio's mirror authority).
"""
import http.server
import os
import sys
import threading
import time
from urllib.parse import parse_qs, urlsplit

POD = os.environ.get("POD_NAME", "?")
LOCK = threading.Lock()
STATS = {"count": 0, "shadow": 0}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without this, Nagle's
    # algorithm holds the body for the peer's delayed ACK (about 40 ms).
    disable_nagle_algorithm = True

    def answer(self):
        url = urlsplit(self.path)
        host = self.headers.get("host", "")
        if url.path == "/__stats":
            with LOCK:
                body = f"count={STATS['count']} shadow={STATS['shadow']}\n".encode()
            return self.reply(200, body, {})
        with LOCK:
            STATS["count"] += 1
            if host.split(":")[0].endswith("-shadow"):
                STATS["shadow"] += 1
        length = int(self.headers.get("content-length", "0") or 0)
        if length:
            self.rfile.read(length)
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        delay = int(q.get("delay", os.environ.get("DELAY_MS", "0")))
        if delay:
            time.sleep(delay / 1000)
        status = int(q.get("status", os.environ.get("STATUS", "200")))
        grpc = q.get("grpc", os.environ.get("GRPC"))
        extra = {}
        if grpc is not None:
            extra = {"content-type": "application/grpc", "grpc-status": grpc}
        xs = "".join(
            f" h:{k.lower()}={v}" for k, v in self.headers.items() if k.lower().startswith("x-")
        )
        body = f"pod={POD} path={self.path} host={host}{xs}\n".encode()
        self.reply(status, body, extra)

    def reply(self, status, body, extra):
        self.send_response(status)
        for k, v in extra.items():
            self.send_header(k, v)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_OPTIONS = answer

    def log_message(self, *args):
        pass


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256


port = int(sys.argv[1]) if len(sys.argv) > 1 else 8080
server = Server(("", port), Handler)
if os.environ.get("TLS_CERT"):
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(os.environ["TLS_CERT"], os.environ["TLS_KEY"])
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
server.serve_forever()
