"""The Open Inference Protocol (KServe v2) messages and gRPC service.

Only protocol adapters import this package; the generated modules live in `_gen` and are
rebuilt by `make proto`.
"""

from edgewise.proto._gen import inference_pb2, inference_pb2_grpc

__all__ = ["inference_pb2", "inference_pb2_grpc"]
