"""Services that reconcile one resource: gather the world, decide purely, then act through k8s/ and postgres/."""
