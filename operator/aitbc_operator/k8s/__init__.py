"""The only code that calls the Kubernetes API; maps ApiException to the operator's errors."""
