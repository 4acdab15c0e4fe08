"""gRPC test peer without generated code: `server PORT` serves
/test.Echo/Say (unary, sets a trailer) and /test.Echo/Count (server
streaming); `client TARGET` calls both and prints what it got."""
import sys
from concurrent import futures

import grpc


def say(request, context):
    context.set_trailing_metadata((("x-echo-trailer", "kept"),))
    return b"echo:" + request


def count(request, context):
    for i in range(int(request)):
        yield str(i).encode()


def serve(port):
    handler = grpc.method_handlers_generic_handler("test.Echo", {
        "Say": grpc.unary_unary_rpc_method_handler(say),
        "Count": grpc.unary_stream_rpc_method_handler(count),
    })
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"[::]:{port}")
    server.start()
    server.wait_for_termination()


def client(target):
    with grpc.insecure_channel(target) as ch:
        reply, call = ch.unary_unary("/test.Echo/Say").with_call(b"hello", timeout=10)
        trailers = dict(call.trailing_metadata())
        print("reply", reply.decode())
        print("trailer", trailers.get("x-echo-trailer"))
        items = [m.decode() for m in ch.unary_stream("/test.Echo/Count")(b"5", timeout=10)]
        print("stream", ",".join(items))


if sys.argv[1] == "server":
    serve(sys.argv[2])
else:
    client(sys.argv[2])
