"""gRPC over HTTP/2 served by nghttp2 in C: a cheaper transport for the scoring server than grpcio's."""
