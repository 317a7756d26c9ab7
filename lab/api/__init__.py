"""The Kubernetes REST API the lab serves: one handler set for every simulated cluster."""
