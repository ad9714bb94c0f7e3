"""provision: one declarative spec to a running Kubernetes cluster on CoreOS-family hosts."""

__version__ = "0.1.0"
