"""Object storage for checkpoints: one interface, chosen by URL (`file://` or `s3://`).

Owns where bytes live and how they are named: content-addressed blobs (sha256) and
manifests written last and atomically. It must not know what a VNode or a network
is: checkpoints (`dcnr.orchestrator.checkpoints`) build on it.
"""

from dcnr.storage.objects import (
    BlobStore,
    FileStore,
    IntegrityError,
    ObjectStore,
    S3Store,
    http_get,
    http_put,
    open_store,
)

__all__ = ["BlobStore", "FileStore", "IntegrityError", "ObjectStore", "S3Store", "http_get", "http_put", "open_store"]
