"""Thin kopf handlers: parse the resource, call a service, return status. Importing this package registers them."""

from . import database, node

__all__ = ["database", "node"]
