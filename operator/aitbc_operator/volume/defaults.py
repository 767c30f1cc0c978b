"""The volume tool's defaults, apart from its code: the command line's parser shows them without importing it."""

#: Backups kept per chain.
DEFAULT_KEEP = 7
#: Seconds to wait for a SQLite lock held by someone else.
DEFAULT_BUSY_TIMEOUT = 2.0
#: The chain-health sidecar's port.
DEFAULT_PORT = 8090
