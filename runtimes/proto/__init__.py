"""The Open Inference Protocol's gRPC messages and service: grpc_predict_v2.proto as KServe publishes it and the
model repository extension's index messages (model_repository.proto), compiled by protoc into one descriptor set,
`grpc_predict_v2.binpb`, when the package is built (setup.py); neither it nor any generated module is kept in the
repository, and no message is written by hand.

The messages live in a descriptor pool of their own, not in protobuf's default pool: other copies of this protocol
(tritonclient.grpc, KServe, MLServer) register the same `inference.*` names there, and two copies in one pool stop
the second import. Only the service's path (`/inference.GRPCInferenceService/...`) and the messages' wire format
reach clients, and both are the published ones."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.message_factory import GetMessageClass

DESCRIPTORS = "grpc_predict_v2.binpb"  # setup.py writes it
PACKAGE = "inference"
SERVICE = f"{PACKAGE}.GRPCInferenceService"


@cache
def pool() -> descriptor_pool.DescriptorPool:
    source = resources.files(__name__).joinpath(DESCRIPTORS)
    try:
        data = source.read_bytes()
    except FileNotFoundError:
        raise ImportError(f"{__name__}/{DESCRIPTORS} is missing: the package was installed without its build step "
                          "(install it with pip, which runs setup.py)", name=f"{__name__}/{DESCRIPTORS}") from None
    files = descriptor_pb2.FileDescriptorSet.FromString(data)
    own = descriptor_pool.DescriptorPool()
    for file in files.file:
        own.Add(file)
    return own


def message(name: str) -> Any:
    """The message class `inference.NAME` (nested names with dots: 'ModelInferRequest.InferInputTensor')."""
    return GetMessageClass(pool().FindMessageTypeByName(f"{PACKAGE}.{name}"))


def methods() -> dict[str, tuple[Any, Any]]:
    """Every method of GRPCInferenceService, RepositoryIndex included, as name -> (request class, response class).
    RepositoryIndex is the extension's: its messages are in model_repository.proto, outside the published service."""
    service = pool().FindServiceByName(SERVICE)
    found = {method.name: (GetMessageClass(method.input_type), GetMessageClass(method.output_type))
             for method in service.methods}
    found["RepositoryIndex"] = (message("RepositoryIndexRequest"), message("RepositoryIndexResponse"))
    return found


pool()  # a package built without its descriptors fails at import, where the server's lazy import expects it
