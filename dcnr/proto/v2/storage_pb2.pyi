from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class BlobTargetRequest(_message.Message):
    __slots__ = ("digest", "pnode", "token")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    PNODE_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    digest: str
    pnode: str
    token: str
    def __init__(self, digest: _Optional[str] = ..., pnode: _Optional[str] = ..., token: _Optional[str] = ...) -> None: ...

class BlobTarget(_message.Message):
    __slots__ = ("url", "token", "expires_at")
    URL_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    url: str
    token: str
    expires_at: float
    def __init__(self, url: _Optional[str] = ..., token: _Optional[str] = ..., expires_at: _Optional[float] = ...) -> None: ...

class BlobUpload(_message.Message):
    __slots__ = ("digest", "token", "data")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    digest: str
    token: str
    data: bytes
    def __init__(self, digest: _Optional[str] = ..., token: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class BlobAck(_message.Message):
    __slots__ = ("digest", "size")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    digest: str
    size: int
    def __init__(self, digest: _Optional[str] = ..., size: _Optional[int] = ...) -> None: ...

class BlobData(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...
