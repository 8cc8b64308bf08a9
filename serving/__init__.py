"""Split SavedModel export, TF Serving configs, a local TF Serving-compatible gRPC server, client and load test."""
