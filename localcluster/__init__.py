"""The local Kubernetes the project develops and tests against, without Docker: a real control plane built from Go
modules, simulated (kwok) nodes for the fast and scale tests, and a real node (kubelet, containerd, runc, CNI,
kube-proxy) that runs the operator's images. `make demo` and the test suite both use it; see docs/local-cluster.md.
"""
