"""Split SavedModel export, TF Serving configs, a local TF Serving gRPC server, client, loadtest."""
