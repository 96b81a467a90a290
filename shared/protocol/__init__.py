"""The swarm protocol: message models, stream names and the wire codec. Pure data, no I/O."""

from shared.protocol.codec import (
    decode,
    decode_json,
    decode_rejection,
    encode,
    encode_data,
    encode_rejection,
    text_fields,
)
from shared.protocol.errors import DecodeError, FieldProblem, ProtocolError
from shared.protocol.messages import (
    KNOWN_VENDORS,
    SCHEMA_VERSION,
    AttemptRecord,
    Cancel,
    Complexity,
    ContextQuery,
    ContextReply,
    Finding,
    Rejection,
    Status,
    Task,
    Urgency,
    new_id,
)
from shared.protocol.names import DEFAULT_NAMESPACE, Names

__all__ = [
    "DEFAULT_NAMESPACE",
    "KNOWN_VENDORS",
    "SCHEMA_VERSION",
    "AttemptRecord",
    "Cancel",
    "Complexity",
    "ContextQuery",
    "ContextReply",
    "DecodeError",
    "FieldProblem",
    "Finding",
    "Names",
    "ProtocolError",
    "Rejection",
    "Status",
    "Task",
    "Urgency",
    "decode",
    "decode_json",
    "decode_rejection",
    "encode",
    "encode_data",
    "encode_rejection",
    "new_id",
    "text_fields",
]
