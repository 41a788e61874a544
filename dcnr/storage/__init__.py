"""Where DCNR's bytes live: one object store interface chosen by URL (`file://` or `s3://`),
and the one way DCNR writes a local file (`write_atomic`).

Owns how bytes are named and kept whole: objects named by the sha256 of their bytes and
checked on every read (checkpoint blobs, dataset tokens, tokenizer JSON), records and
manifests written last, every local file written atomically. It must not know what a
VNode, a network or a dataset is: checkpoints (`dcnr.orchestrator.checkpoints`) and the
data store (`dcnr.orchestrator.datastore`) build on it. May import boto3; never gRPC.
"""

from dcnr.storage.files import write_atomic
from dcnr.storage.objects import (
    BlobStore,
    FileStore,
    IntegrityError,
    ObjectStore,
    S3Store,
    get_checked,
    http_get,
    http_put,
    open_store,
    put_checked,
)

__all__ = ["BlobStore", "FileStore", "IntegrityError", "ObjectStore", "S3Store", "get_checked", "http_get",
           "http_put", "open_store", "put_checked", "write_atomic"]
