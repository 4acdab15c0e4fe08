"""HTTP/1.1 test server: GET answers with the pod name and path (and,
for /headers, every request header as `name: value` lines); POST echoes
the body (chunked or not) back with a chunked response."""
import http.server
import os
import sys

POD = os.environ.get("POD_NAME", "?")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: no Nagle delay between.
    disable_nagle_algorithm = True

    def do_GET(self):
        body = f"pod={POD} path={self.path}\n"
        if self.path.startswith("/headers"):
            body += "".join(f"{k.lower()}: {v}\n" for k, v in self.headers.items())
        body = body.encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def read_body(self):
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("content-length", "0")))

    def do_POST(self):
        data = self.read_body()
        self.send_response(200)
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for i in range(0, len(data), 1000):
            chunk = data[i:i + 1000]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, *args):
        pass


port = int(sys.argv[1]) if len(sys.argv) > 1 else 8080
http.server.ThreadingHTTPServer(("", port), Handler).serve_forever()
