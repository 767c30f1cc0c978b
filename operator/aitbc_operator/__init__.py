"""aitbc-operator: a kopf operator for AITBC databases, chain volumes and coordinated node/RPC rollouts."""

__version__ = "0.1.0"

GROUP = "aitbc.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
