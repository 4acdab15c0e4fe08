"""An HTTP external authorizer, after Istio's sample: allows a request
carrying `x-ext-authz: allow` (200, with `x-ext-authz-check-result:
allowed`), denies any other with 403, `x-ext-authz-check-result: denied`
and a body naming the path it was asked about, the header's value and
whether a header outside the provider's list (`x-secret`) reached it."""
import http.server
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self):
        value = self.headers.get("x-ext-authz", "")
        if value == "allow":
            code, result, body = 200, "allowed", b""
        else:
            code, result = 403, "denied"
            body = (f"denied: path={self.path} x-ext-authz={value} "
                    f"secret={'x-secret' in self.headers} "
                    f"host={self.headers.get('host', '')}").encode()
        self.send_response(code)
        self.send_header("x-ext-authz-check-result", result)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_DELETE = do_PUT = answer

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("", int(sys.argv[1])), Handler).serve_forever()
