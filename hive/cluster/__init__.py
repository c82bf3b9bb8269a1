"""Cluster mode: PostgreSQL is the source of truth for the registry (hive.cluster.store), each node's
LMDB registry is a replica kept by one replicator per node (hive.cluster.replicator), nodes report what
they serve (hive.cluster.nodes). Off unless the cluster_dsn setting is set; nothing here is imported
in single-node mode."""
