"""A real gRPC server and client (grpcio) for meshguard's protocol tests.

No generated code: the service `test.Echo` carries raw bytes.

  serve --port-file F [--fail-every N]
      Unary   /test.Echo/Unary   answers the request bytes; every Nth call
                                 (N = --fail-every, 0: never) aborts UNAVAILABLE.
      Stream  /test.Echo/Stream  the request is "COUNT DELAY_MS CODE": COUNT
                                 messages DELAY_MS apart, then status CODE.
  call --target HOST:PORT --method unary|stream [--n N] [--concurrency C]
       [--request TEXT] [--timeout S]
      Prints one JSON line per call: code (name), details, messages received,
      trailing and initial metadata.
"""

import argparse
import json
import sys
import threading
import time
from concurrent import futures

import grpc


def serve(args):
    lock = threading.Lock()
    count = [0]

    def unary(request, context):
        with lock:
            count[0] += 1
            n = count[0]
        if args.fail_every and n % args.fail_every == 0:
            context.abort(grpc.StatusCode.UNAVAILABLE, "backend unavailable")
        return request

    def stream(request, context):
        parts = request.decode().split()
        total, delay_ms, code = int(parts[0]), int(parts[1]), int(parts[2])
        for i in range(total):
            if not context.is_active():
                return
            yield b"message %d" % i
            time.sleep(delay_ms / 1000)
        if code != 0:
            status = next(s for s in grpc.StatusCode if s.value[0] == code)
            context.abort(status, "stream ended with %s" % status.name)

    handler = grpc.method_handlers_generic_handler("test.Echo", {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Stream": grpc.unary_stream_rpc_method_handler(stream),
    })
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=64))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    with open(args.port_file + ".tmp", "w") as f:
        f.write(str(port))
    import os
    os.replace(args.port_file + ".tmp", args.port_file)
    server.wait_for_termination()


def one_call(channel, args):
    out = {"code": "OK", "details": "", "messages": 0, "trailing": {}, "initial": {}}
    try:
        if args.method == "unary":
            call = channel.unary_unary("/test.Echo/Unary")
            _, c = call.with_call(args.request.encode(), timeout=args.timeout, metadata=args.metadata)
            out["messages"] = 1
            out["trailing"] = dict(c.trailing_metadata() or ())
            out["initial"] = dict(c.initial_metadata() or ())
        else:
            call = channel.unary_stream("/test.Echo/Stream")
            it = call(args.request.encode(), timeout=args.timeout, metadata=args.metadata)
            for _ in it:
                out["messages"] += 1
            out["trailing"] = dict(it.trailing_metadata() or ())
    except grpc.RpcError as e:
        out["code"] = e.code().name
        out["details"] = e.details() or ""
        out["trailing"] = dict(e.trailing_metadata() or ())
        try:
            out["initial"] = dict(e.initial_metadata() or ())
        except Exception:  # noqa: BLE001 - not every error carries it
            pass
    return out


def call(args):
    # Plaintext HTTP/2 (h2c) to Envoy's listener; one channel, many streams.
    with grpc.insecure_channel(args.target) as channel:
        with futures.ThreadPoolExecutor(max_workers=args.concurrency) as pool:
            for result in pool.map(lambda _: one_call(channel, args), range(args.n)):
                print(json.dumps(result), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--port-file", required=True)
    s.add_argument("--fail-every", type=int, default=0)
    c = sub.add_parser("call")
    c.add_argument("--target", required=True)
    c.add_argument("--method", choices=["unary", "stream"], default="unary")
    c.add_argument("--n", type=int, default=1)
    c.add_argument("--concurrency", type=int, default=1)
    c.add_argument("--request", default="ping")
    c.add_argument("--timeout", type=float, default=10)
    c.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE",
                   help="request metadata sent on every call (repeatable)")
    args = ap.parse_args()
    if args.cmd == "call":
        args.metadata = [tuple(m.split("=", 1)) for m in args.metadata]
    serve(args) if args.cmd == "serve" else call(args)


if __name__ == "__main__":
    sys.exit(main())
