#!/usr/bin/env python3
"""A real OTLP/gRPC trace receiver for the tests (tests/tests/tracing.rs).

Serves opentelemetry.proto.collector.trace.v1.TraceService/Export on 127.0.0.1 (the generated
code of the PyPI package `opentelemetry-proto`, served by `grpcio`; scripts/setup installs both,
pinned) and appends each span received to OUT as one JSON line:
{"service": …, "trace_id": hex, "span_id": hex, "parent_span_id": hex or "", "name": …,
 "kind": int, "start_ns": int, "end_ns": int, "status": int, "attributes": {key: value}}.

Prints `listening PORT` once it serves (it binds port 0: the OS picks the port).

Usage: otlp_receiver.py OUT
"""

import json
import sys
import threading
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


def value(any_value):
    """An AnyValue as JSON."""
    kind = any_value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [value(v) for v in any_value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: value(kv.value) for kv in any_value.kvlist_value.values}
    if kind == "bytes_value":
        return any_value.bytes_value.hex()
    return getattr(any_value, kind)


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, out):
        self.out = out
        self.lock = threading.Lock()

    def Export(self, request, context):
        lines = []
        for resource_spans in request.resource_spans:
            resource = {kv.key: value(kv.value) for kv in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    lines.append(
                        json.dumps(
                            {
                                "service": resource.get("service.name"),
                                "trace_id": span.trace_id.hex(),
                                "span_id": span.span_id.hex(),
                                "parent_span_id": span.parent_span_id.hex(),
                                "name": span.name,
                                "kind": span.kind,
                                "start_ns": span.start_time_unix_nano,
                                "end_ns": span.end_time_unix_nano,
                                "status": span.status.code,
                                "attributes": {kv.key: value(kv.value) for kv in span.attributes},
                            }
                        )
                    )
        # Written before the answer: once the exporter has its reply, the spans are in the file.
        with self.lock, open(self.out, "a", encoding="utf-8") as f:
            for line in lines:
                f.write(line + "\n")
        return trace_service_pb2.ExportTraceServiceResponse()


def main():
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Receiver(sys.argv[1]), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"listening {port}", flush=True)
    server.wait_for_termination()
    return 0


if __name__ == "__main__":
    sys.exit(main())
