"""An OTLP trace receiver built on the official opentelemetry-proto
definitions (PyPI `opentelemetry-proto`, with grpcio): it takes
`TraceService/Export` over gRPC on GRPC_PORT and `POST /v1/traces`
(HTTP/protobuf) on HTTP_PORT, and answers `GET /spans` on HTTP_PORT with
every span received so far, as JSON: ids in hex, kind, name, the
resource's `service.name`, attributes, and which transport brought it.

Usage: otlp_receiver.py GRPC_PORT HTTP_PORT
"""

import http.server
import json
import sys
import threading
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

LOCK = threading.Lock()
SPANS = []
KINDS = {v: k for k, v in trace_pb2.Span.SpanKind.items()}


def value(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


def take(request, via):
    with LOCK:
        for rs in request.resource_spans:
            resource = {kv.key: value(kv.value) for kv in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    SPANS.append({
                        "via": via,
                        "trace_id": s.trace_id.hex(),
                        "span_id": s.span_id.hex(),
                        "parent_span_id": s.parent_span_id.hex(),
                        "name": s.name,
                        "kind": KINDS.get(s.kind, str(s.kind)),
                        "status": s.status.code,
                        "start": s.start_time_unix_nano,
                        "end": s.end_time_unix_nano,
                        "service": resource.get("service.name"),
                        "scope": ss.scope.name,
                        "attributes": {kv.key: value(kv.value) for kv in s.attributes},
                    })


class Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def Export(self, request, context):
        take(request, "grpc")
        return trace_service_pb2.ExportTraceServiceResponse()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def reply(self, code, body, ctype):
        self.send_response(code)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        data = self.rfile.read(int(self.headers.get("content-length", "0")))
        if self.path != "/v1/traces" or self.headers.get("content-type") != "application/x-protobuf":
            return self.reply(404, b"", "text/plain")
        request = trace_service_pb2.ExportTraceServiceRequest()
        request.ParseFromString(data)
        take(request, "http")
        self.reply(200, trace_service_pb2.ExportTraceServiceResponse().SerializeToString(),
                   "application/x-protobuf")

    def do_GET(self):
        with LOCK:
            body = json.dumps(SPANS).encode()
        self.reply(200, body, "application/json")

    def log_message(self, *args):
        pass


def main():
    grpc_port, http_port = int(sys.argv[1]), int(sys.argv[2])
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), server)
    server.add_insecure_port(f"0.0.0.0:{grpc_port}")
    server.start()
    http.server.ThreadingHTTPServer(("", http_port), Handler).serve_forever()


if __name__ == "__main__":
    main()
