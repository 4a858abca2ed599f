from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CallRequest(_message.Message):
    __slots__ = ("call", "timeout_seconds", "expires_unix_ms", "get_variable", "set_variable", "get_variables", "update_variables", "register_variable", "delete_variable", "list_variables", "heartbeat", "get_session", "has_variable", "settle", "more")
    CALL_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    GET_VARIABLE_FIELD_NUMBER: _ClassVar[int]
    SET_VARIABLE_FIELD_NUMBER: _ClassVar[int]
    GET_VARIABLES_FIELD_NUMBER: _ClassVar[int]
    UPDATE_VARIABLES_FIELD_NUMBER: _ClassVar[int]
    REGISTER_VARIABLE_FIELD_NUMBER: _ClassVar[int]
    DELETE_VARIABLE_FIELD_NUMBER: _ClassVar[int]
    LIST_VARIABLES_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    GET_SESSION_FIELD_NUMBER: _ClassVar[int]
    HAS_VARIABLE_FIELD_NUMBER: _ClassVar[int]
    SETTLE_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    call: int
    timeout_seconds: float
    expires_unix_ms: int
    get_variable: GetVariableRequest
    set_variable: SetVariableRequest
    get_variables: GetVariablesRequest
    update_variables: UpdateVariablesRequest
    register_variable: RegisterVariableRequest
    delete_variable: DeleteVariableRequest
    list_variables: ListVariablesRequest
    heartbeat: HeartbeatRequest
    get_session: GetSessionRequest
    has_variable: HasVariableRequest
    settle: SettleRequest
    more: _containers.RepeatedCompositeFieldContainer[CallRequest]
    def __init__(self, call: _Optional[int] = ..., timeout_seconds: _Optional[float] = ..., expires_unix_ms: _Optional[int] = ..., get_variable: _Optional[_Union[GetVariableRequest, _Mapping]] = ..., set_variable: _Optional[_Union[SetVariableRequest, _Mapping]] = ..., get_variables: _Optional[_Union[GetVariablesRequest, _Mapping]] = ..., update_variables: _Optional[_Union[UpdateVariablesRequest, _Mapping]] = ..., register_variable: _Optional[_Union[RegisterVariableRequest, _Mapping]] = ..., delete_variable: _Optional[_Union[DeleteVariableRequest, _Mapping]] = ..., list_variables: _Optional[_Union[ListVariablesRequest, _Mapping]] = ..., heartbeat: _Optional[_Union[HeartbeatRequest, _Mapping]] = ..., get_session: _Optional[_Union[GetSessionRequest, _Mapping]] = ..., has_variable: _Optional[_Union[HasVariableRequest, _Mapping]] = ..., settle: _Optional[_Union[SettleRequest, _Mapping]] = ..., more: _Optional[_Iterable[_Union[CallRequest, _Mapping]]] = ...) -> None: ...

class CallReply(_message.Message):
    __slots__ = ("call", "error", "get_variable", "set_variable", "get_variables", "update_variables", "register_variable", "delete_variable", "list_variables", "heartbeat", "get_session", "has_variable", "settle", "more")
    CALL_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    GET_VARIABLE_FIELD_NUMBER: _ClassVar[int]
    SET_VARIABLE_FIELD_NUMBER: _ClassVar[int]
    GET_VARIABLES_FIELD_NUMBER: _ClassVar[int]
    UPDATE_VARIABLES_FIELD_NUMBER: _ClassVar[int]
    REGISTER_VARIABLE_FIELD_NUMBER: _ClassVar[int]
    DELETE_VARIABLE_FIELD_NUMBER: _ClassVar[int]
    LIST_VARIABLES_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    GET_SESSION_FIELD_NUMBER: _ClassVar[int]
    HAS_VARIABLE_FIELD_NUMBER: _ClassVar[int]
    SETTLE_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    call: int
    error: bytes
    get_variable: GetVariableResponse
    set_variable: SetVariableResponse
    get_variables: GetVariablesResponse
    update_variables: UpdateVariablesResponse
    register_variable: RegisterVariableResponse
    delete_variable: DeleteVariableResponse
    list_variables: ListVariablesResponse
    heartbeat: HeartbeatResponse
    get_session: SessionInfo
    has_variable: HasVariableResponse
    settle: SettleResponse
    more: _containers.RepeatedCompositeFieldContainer[CallReply]
    def __init__(self, call: _Optional[int] = ..., error: _Optional[bytes] = ..., get_variable: _Optional[_Union[GetVariableResponse, _Mapping]] = ..., set_variable: _Optional[_Union[SetVariableResponse, _Mapping]] = ..., get_variables: _Optional[_Union[GetVariablesResponse, _Mapping]] = ..., update_variables: _Optional[_Union[UpdateVariablesResponse, _Mapping]] = ..., register_variable: _Optional[_Union[RegisterVariableResponse, _Mapping]] = ..., delete_variable: _Optional[_Union[DeleteVariableResponse, _Mapping]] = ..., list_variables: _Optional[_Union[ListVariablesResponse, _Mapping]] = ..., heartbeat: _Optional[_Union[HeartbeatResponse, _Mapping]] = ..., get_session: _Optional[_Union[SessionInfo, _Mapping]] = ..., has_variable: _Optional[_Union[HasVariableResponse, _Mapping]] = ..., settle: _Optional[_Union[SettleResponse, _Mapping]] = ..., more: _Optional[_Iterable[_Union[CallReply, _Mapping]]] = ...) -> None: ...

class ErrorDetail(_message.Message):
    __slots__ = ("error_class", "reason", "message", "details", "errors")
    ERROR_CLASS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    error_class: str
    reason: str
    message: str
    details: bytes
    errors: _containers.RepeatedCompositeFieldContainer[EntryError]
    def __init__(self, error_class: _Optional[str] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., details: _Optional[bytes] = ..., errors: _Optional[_Iterable[_Union[EntryError, _Mapping]]] = ...) -> None: ...

class EntryError(_message.Message):
    __slots__ = ("identifier", "error")
    IDENTIFIER_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    identifier: str
    error: ErrorDetail
    def __init__(self, identifier: _Optional[str] = ..., error: _Optional[_Union[ErrorDetail, _Mapping]] = ...) -> None: ...

class OpenSessionRequest(_message.Message):
    __slots__ = ("session_id", "create_if_missing", "metadata", "pending", "request_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CREATE_IF_MISSING_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    create_if_missing: bool
    metadata: bytes
    pending: bool
    request_id: str
    def __init__(self, session_id: _Optional[str] = ..., create_if_missing: _Optional[bool] = ..., metadata: _Optional[bytes] = ..., pending: _Optional[bool] = ..., request_id: _Optional[str] = ...) -> None: ...

class OpenSessionResponse(_message.Message):
    __slots__ = ("session_id", "created", "incarnation", "ttl_seconds", "store", "max_calls_per_connection")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    STORE_FIELD_NUMBER: _ClassVar[int]
    MAX_CALLS_PER_CONNECTION_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    created: bool
    incarnation: str
    ttl_seconds: float
    store: str
    max_calls_per_connection: int
    def __init__(self, session_id: _Optional[str] = ..., created: _Optional[bool] = ..., incarnation: _Optional[str] = ..., ttl_seconds: _Optional[float] = ..., store: _Optional[str] = ..., max_calls_per_connection: _Optional[int] = ...) -> None: ...

class CommitSessionRequest(_message.Message):
    __slots__ = ("session_id", "incarnation")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    incarnation: str
    def __init__(self, session_id: _Optional[str] = ..., incarnation: _Optional[str] = ...) -> None: ...

class CommitSessionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CloseSessionRequest(_message.Message):
    __slots__ = ("session_id", "incarnation")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    incarnation: str
    def __init__(self, session_id: _Optional[str] = ..., incarnation: _Optional[str] = ...) -> None: ...

class CloseSessionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetSessionRequest(_message.Message):
    __slots__ = ("session_id", "incarnation")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    incarnation: str
    def __init__(self, session_id: _Optional[str] = ..., incarnation: _Optional[str] = ...) -> None: ...

class SessionInfo(_message.Message):
    __slots__ = ("session_id", "variable_count", "created_at", "last_active_at", "ttl_seconds", "metadata", "incarnation", "next_sequence")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    VARIABLE_COUNT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_ACTIVE_AT_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    NEXT_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    variable_count: int
    created_at: float
    last_active_at: float
    ttl_seconds: float
    metadata: bytes
    incarnation: str
    next_sequence: int
    def __init__(self, session_id: _Optional[str] = ..., variable_count: _Optional[int] = ..., created_at: _Optional[float] = ..., last_active_at: _Optional[float] = ..., ttl_seconds: _Optional[float] = ..., metadata: _Optional[bytes] = ..., incarnation: _Optional[str] = ..., next_sequence: _Optional[int] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("session_id", "incarnation")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    incarnation: str
    def __init__(self, session_id: _Optional[str] = ..., incarnation: _Optional[str] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("expires_at",)
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    expires_at: float
    def __init__(self, expires_at: _Optional[float] = ...) -> None: ...

class SettleRequest(_message.Message):
    __slots__ = ("session_id", "incarnation", "write_request_id", "age_seconds")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    WRITE_REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    incarnation: str
    write_request_id: str
    age_seconds: float
    def __init__(self, session_id: _Optional[str] = ..., incarnation: _Optional[str] = ..., write_request_id: _Optional[str] = ..., age_seconds: _Optional[float] = ...) -> None: ...

class SettleResponse(_message.Message):
    __slots__ = ("applied",)
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    applied: bool
    def __init__(self, applied: _Optional[bool] = ...) -> None: ...

class RegisterVariableRequest(_message.Message):
    __slots__ = ("session_id", "name", "type", "initial_value", "constraints", "metadata", "description", "request_id", "incarnation")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    INITIAL_VALUE_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINTS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    name: str
    type: str
    initial_value: bytes
    constraints: bytes
    metadata: bytes
    description: str
    request_id: str
    incarnation: str
    def __init__(self, session_id: _Optional[str] = ..., name: _Optional[str] = ..., type: _Optional[str] = ..., initial_value: _Optional[bytes] = ..., constraints: _Optional[bytes] = ..., metadata: _Optional[bytes] = ..., description: _Optional[str] = ..., request_id: _Optional[str] = ..., incarnation: _Optional[str] = ...) -> None: ...

class RegisterVariableResponse(_message.Message):
    __slots__ = ("var_id",)
    VAR_ID_FIELD_NUMBER: _ClassVar[int]
    var_id: str
    def __init__(self, var_id: _Optional[str] = ...) -> None: ...

class GetVariableRequest(_message.Message):
    __slots__ = ("session_id", "identifier", "full", "incarnation")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    IDENTIFIER_FIELD_NUMBER: _ClassVar[int]
    FULL_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    identifier: str
    full: bool
    incarnation: str
    def __init__(self, session_id: _Optional[str] = ..., identifier: _Optional[str] = ..., full: _Optional[bool] = ..., incarnation: _Optional[str] = ...) -> None: ...

class GetVariableResponse(_message.Message):
    __slots__ = ("value", "version", "record")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    value: bytes
    version: int
    record: Variable
    def __init__(self, value: _Optional[bytes] = ..., version: _Optional[int] = ..., record: _Optional[_Union[Variable, _Mapping]] = ...) -> None: ...

class SetVariableRequest(_message.Message):
    __slots__ = ("session_id", "identifier", "value", "metadata", "expected_version", "request_id", "incarnation")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    IDENTIFIER_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    identifier: str
    value: bytes
    metadata: bytes
    expected_version: int
    request_id: str
    incarnation: str
    def __init__(self, session_id: _Optional[str] = ..., identifier: _Optional[str] = ..., value: _Optional[bytes] = ..., metadata: _Optional[bytes] = ..., expected_version: _Optional[int] = ..., request_id: _Optional[str] = ..., incarnation: _Optional[str] = ...) -> None: ...

class SetVariableResponse(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    def __init__(self, version: _Optional[int] = ...) -> None: ...

class GetVariablesRequest(_message.Message):
    __slots__ = ("session_id", "identifiers", "incarnation")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    IDENTIFIERS_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    identifiers: _containers.RepeatedScalarFieldContainer[str]
    incarnation: str
    def __init__(self, session_id: _Optional[str] = ..., identifiers: _Optional[_Iterable[str]] = ..., incarnation: _Optional[str] = ...) -> None: ...

class GetVariablesResponse(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: bytes
    def __init__(self, values: _Optional[bytes] = ...) -> None: ...

class HasVariableRequest(_message.Message):
    __slots__ = ("session_id", "identifier", "incarnation")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    IDENTIFIER_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    identifier: str
    incarnation: str
    def __init__(self, session_id: _Optional[str] = ..., identifier: _Optional[str] = ..., incarnation: _Optional[str] = ...) -> None: ...

class HasVariableResponse(_message.Message):
    __slots__ = ("exists",)
    EXISTS_FIELD_NUMBER: _ClassVar[int]
    exists: bool
    def __init__(self, exists: _Optional[bool] = ...) -> None: ...

class UpdateVariablesRequest(_message.Message):
    __slots__ = ("session_id", "updates", "metadata", "request_id", "incarnation")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    UPDATES_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    updates: bytes
    metadata: bytes
    request_id: str
    incarnation: str
    def __init__(self, session_id: _Optional[str] = ..., updates: _Optional[bytes] = ..., metadata: _Optional[bytes] = ..., request_id: _Optional[str] = ..., incarnation: _Optional[str] = ...) -> None: ...

class UpdateVariablesResponse(_message.Message):
    __slots__ = ("next_sequence",)
    NEXT_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    next_sequence: int
    def __init__(self, next_sequence: _Optional[int] = ...) -> None: ...

class ListVariablesRequest(_message.Message):
    __slots__ = ("session_id", "pattern", "incarnation")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PATTERN_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    pattern: str
    incarnation: str
    def __init__(self, session_id: _Optional[str] = ..., pattern: _Optional[str] = ..., incarnation: _Optional[str] = ...) -> None: ...

class Variable(_message.Message):
    __slots__ = ("id", "name", "type", "value", "constraints", "metadata", "version", "created_at", "last_updated_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINTS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    type: str
    value: bytes
    constraints: bytes
    metadata: bytes
    version: int
    created_at: float
    last_updated_at: float
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., type: _Optional[str] = ..., value: _Optional[bytes] = ..., constraints: _Optional[bytes] = ..., metadata: _Optional[bytes] = ..., version: _Optional[int] = ..., created_at: _Optional[float] = ..., last_updated_at: _Optional[float] = ...) -> None: ...

class ListVariablesResponse(_message.Message):
    __slots__ = ("variables",)
    VARIABLES_FIELD_NUMBER: _ClassVar[int]
    variables: _containers.RepeatedCompositeFieldContainer[Variable]
    def __init__(self, variables: _Optional[_Iterable[_Union[Variable, _Mapping]]] = ...) -> None: ...

class DeleteVariableRequest(_message.Message):
    __slots__ = ("session_id", "identifier", "request_id", "incarnation")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    IDENTIFIER_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    identifier: str
    request_id: str
    incarnation: str
    def __init__(self, session_id: _Optional[str] = ..., identifier: _Optional[str] = ..., request_id: _Optional[str] = ..., incarnation: _Optional[str] = ...) -> None: ...

class DeleteVariableResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ExportSessionRequest(_message.Message):
    __slots__ = ("session_id", "columnar", "incarnation")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    COLUMNAR_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    columnar: bool
    incarnation: str
    def __init__(self, session_id: _Optional[str] = ..., columnar: _Optional[bool] = ..., incarnation: _Optional[str] = ...) -> None: ...

class ExportSessionResponse(_message.Message):
    __slots__ = ("state", "columns")
    STATE_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    state: bytes
    columns: SessionColumns
    def __init__(self, state: _Optional[bytes] = ..., columns: _Optional[_Union[SessionColumns, _Mapping]] = ...) -> None: ...

class ImportSessionRequest(_message.Message):
    __slots__ = ("session_id", "state", "columns", "want_digest", "request_id", "continue_sequence", "incarnation")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    WANT_DIGEST_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CONTINUE_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    state: bytes
    columns: SessionColumns
    want_digest: bool
    request_id: str
    continue_sequence: int
    incarnation: str
    def __init__(self, session_id: _Optional[str] = ..., state: _Optional[bytes] = ..., columns: _Optional[_Union[SessionColumns, _Mapping]] = ..., want_digest: _Optional[bool] = ..., request_id: _Optional[str] = ..., continue_sequence: _Optional[int] = ..., incarnation: _Optional[str] = ...) -> None: ...

class SessionColumns(_message.Message):
    __slots__ = ("session_id", "metadata", "ids", "names", "definitions", "definition", "values", "versions", "created_at", "last_updated_at", "variable_metadata")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    NAMES_FIELD_NUMBER: _ClassVar[int]
    DEFINITIONS_FIELD_NUMBER: _ClassVar[int]
    DEFINITION_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    VARIABLE_METADATA_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    metadata: bytes
    ids: _containers.RepeatedScalarFieldContainer[str]
    names: _containers.RepeatedScalarFieldContainer[str]
    definitions: _containers.RepeatedCompositeFieldContainer[VariableDefinition]
    definition: _containers.RepeatedScalarFieldContainer[int]
    values: bytes
    versions: _containers.RepeatedScalarFieldContainer[int]
    created_at: _containers.RepeatedScalarFieldContainer[float]
    last_updated_at: _containers.RepeatedScalarFieldContainer[float]
    variable_metadata: bytes
    def __init__(self, session_id: _Optional[str] = ..., metadata: _Optional[bytes] = ..., ids: _Optional[_Iterable[str]] = ..., names: _Optional[_Iterable[str]] = ..., definitions: _Optional[_Iterable[_Union[VariableDefinition, _Mapping]]] = ..., definition: _Optional[_Iterable[int]] = ..., values: _Optional[bytes] = ..., versions: _Optional[_Iterable[int]] = ..., created_at: _Optional[_Iterable[float]] = ..., last_updated_at: _Optional[_Iterable[float]] = ..., variable_metadata: _Optional[bytes] = ...) -> None: ...

class VariableDefinition(_message.Message):
    __slots__ = ("type", "constraints")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINTS_FIELD_NUMBER: _ClassVar[int]
    type: str
    constraints: bytes
    def __init__(self, type: _Optional[str] = ..., constraints: _Optional[bytes] = ...) -> None: ...

class ImportSessionResponse(_message.Message):
    __slots__ = ("count", "digest")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    count: int
    digest: bytes
    def __init__(self, count: _Optional[int] = ..., digest: _Optional[bytes] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("session_id", "patterns", "start_sequence", "incarnation", "started", "progress")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PATTERNS_FIELD_NUMBER: _ClassVar[int]
    START_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    patterns: _containers.RepeatedScalarFieldContainer[str]
    start_sequence: int
    incarnation: str
    started: bool
    progress: bool
    def __init__(self, session_id: _Optional[str] = ..., patterns: _Optional[_Iterable[str]] = ..., start_sequence: _Optional[int] = ..., incarnation: _Optional[str] = ..., started: _Optional[bool] = ..., progress: _Optional[bool] = ...) -> None: ...

class VariableEvent(_message.Message):
    __slots__ = ("kind", "session_id", "var_id", "name", "value", "version", "metadata", "timestamp", "sequence", "incarnation")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[VariableEvent.Kind]
        KIND_REGISTERED: _ClassVar[VariableEvent.Kind]
        KIND_UPDATED: _ClassVar[VariableEvent.Kind]
        KIND_DELETED: _ClassVar[VariableEvent.Kind]
        KIND_OVERFLOW: _ClassVar[VariableEvent.Kind]
        KIND_CLOSED: _ClassVar[VariableEvent.Kind]
        KIND_STARTED: _ClassVar[VariableEvent.Kind]
        KIND_PROGRESS: _ClassVar[VariableEvent.Kind]
    KIND_UNSPECIFIED: VariableEvent.Kind
    KIND_REGISTERED: VariableEvent.Kind
    KIND_UPDATED: VariableEvent.Kind
    KIND_DELETED: VariableEvent.Kind
    KIND_OVERFLOW: VariableEvent.Kind
    KIND_CLOSED: VariableEvent.Kind
    KIND_STARTED: VariableEvent.Kind
    KIND_PROGRESS: VariableEvent.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    VAR_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    kind: VariableEvent.Kind
    session_id: str
    var_id: str
    name: str
    value: bytes
    version: int
    metadata: bytes
    timestamp: float
    sequence: int
    incarnation: str
    def __init__(self, kind: _Optional[_Union[VariableEvent.Kind, str]] = ..., session_id: _Optional[str] = ..., var_id: _Optional[str] = ..., name: _Optional[str] = ..., value: _Optional[bytes] = ..., version: _Optional[int] = ..., metadata: _Optional[bytes] = ..., timestamp: _Optional[float] = ..., sequence: _Optional[int] = ..., incarnation: _Optional[str] = ...) -> None: ...
