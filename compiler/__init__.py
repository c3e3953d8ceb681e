"""mailgw: compile a federated mail gateway's declarations into MX artifacts."""

__version__ = "0.1.0"
