"""Code that runs inside mlpack images: the inference server and the Lambda handler.

It ships alone in every image (at /opt/mlpack/lib/mlpk/runtimes, with openapi.json beside it), so it imports only the
standard library, numpy, onnxruntime and its server dependencies (httptools, orjson, prometheus_client, hpack,
protobuf), and never
`mlpk.packager`; tests/runtime/test_imports.py holds it to that.

    server.py          `python3 -m mlpk.runtimes.server`: the process, its lifecycle, SIGTERM drain
    http.py            HTTP/1.1 connections (httptools' parser on asyncio), limits and deadlines
    scheduler.py       when and where inference calls run: concurrency, the queue, deadlines, batches
    batching.py        dynamic batching: which calls stack, and the check that stacking changes no answer
    grpc_server.py     the Open Inference Protocol over gRPC (on grpc_wire.py, on the same event loop)
    grpc_wire.py       gRPC's unary calls over HTTP/2: frames, flow control, HPACK by hpack
    lambda_handler.py  `mlpk.runtimes.lambda_handler.handler` for awslambdaric: API Gateway v1/v2, Function URL, direct
    api.py             the route table and endpoints both transports share (v2, TF Serving, OpenAPI)
    codec.py           v2 requests and responses: JSON tensors and the binary tensor extension
    tfserving.py       TF Serving REST :predict (instances / inputs)
    bodies.py          gzip / deflate request bodies, bounded
    model.py           loading the model, its card and tensor signatures; running it
    providers.py       execution providers in the target's order; TensorRT options and caches
    cpus.py            CPUs from the cgroup quota, for onnxruntime's thread pool
    warmup.py          warm-up runs before readiness, with progress logged
    metrics.py         Prometheus metrics;  logs.py  JSON log lines;  config.py  MLPACK_* settings
    dtypes.py          v2 datatypes <-> onnxruntime types <-> numpy;  errors.py  4xx errors
"""
