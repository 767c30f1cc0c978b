"""Thin kopf handlers: parse the resource, call a service, return status. Importing this package registers them."""

from . import node

__all__ = ["node"]
