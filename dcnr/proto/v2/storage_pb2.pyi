from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class BlobTargetRequest(_message.Message):
    __slots__ = ("digest", "token", "network", "vnode")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    VNODE_FIELD_NUMBER: _ClassVar[int]
    digest: str
    token: str
    network: str
    vnode: str
    def __init__(self, digest: _Optional[str] = ..., token: _Optional[str] = ..., network: _Optional[str] = ..., vnode: _Optional[str] = ...) -> None: ...

class BlobTarget(_message.Message):
    __slots__ = ("url", "token", "expires_at", "stored", "headers")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    URL_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    STORED_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    url: str
    token: str
    expires_at: float
    stored: bool
    headers: _containers.ScalarMap[str, str]
    def __init__(self, url: _Optional[str] = ..., token: _Optional[str] = ..., expires_at: _Optional[float] = ..., stored: _Optional[bool] = ..., headers: _Optional[_Mapping[str, str]] = ...) -> None: ...

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
