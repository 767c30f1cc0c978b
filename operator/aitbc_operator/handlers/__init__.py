"""Thin kopf handlers: parse the resource, call a service, return status. Importing this package registers them."""
