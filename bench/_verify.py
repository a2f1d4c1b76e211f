"""One request through a real client before and after each load run: the answer must match onnxruntime's.

h2load only sees HTTP status; these checks are what prove grpc-status OK and correct outputs.
"""

from __future__ import annotations

import http.client

import grpc

from _cases import ModelCase
from _payloads import GRPC_METHOD, decode_grpc, decode_rest, grpc_message, mismatch


def grpc_call(port: int, case: ModelCase, timeout: float = 5.0) -> tuple[int | None, str | None]:
    """(size of the serialized response, None) when right, else (None, why)."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(GRPC_METHOD)
        try:
            data = call(grpc_message(case), timeout=timeout)
        except grpc.RpcError as exc:
            return None, f"grpc {exc.code().name}: {exc.details()}"
    problem = mismatch(case, decode_grpc(data))
    return (None, problem) if problem else (len(data), None)


def rest_call(
    port: int, path: str, body: bytes, headers: dict[str, str], case: ModelCase, timeout: float = 10.0
) -> tuple[int | None, str | None]:
    """(size of the response body, None) when right, else (None, why)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        header_length = response.getheader("inference-header-content-length")
    except OSError as exc:
        return None, f"http: {exc}"
    finally:
        conn.close()
    if response.status != 200:
        return None, f"http {response.status}: {data[:300]!r}"
    try:
        got = decode_rest(data, int(header_length) if header_length else None)
    except (ValueError, KeyError, TypeError) as exc:
        return None, f"undecodable response: {exc}; {data[:200]!r}"
    problem = mismatch(case, got)
    return (None, problem) if problem else (len(data), None)
