"""The Connect port's two codecs, binary protobuf and JSON, over the same upb classes.

The binary codec is the identity: request bytes go to the route's own
decoder (``MethodRoute.decoder``: limits, ``from_proto``) and the encoder's
bytes go out, exactly as on the gRPC port. The JSON codec turns the JSON
body into the method's generated (upb) class with ``google.protobuf.json_format``
and serializes it, so the same decoder runs after it; a response goes the
other way. There is no second message model.

``content_type`` reads a request's ``content-type`` into the protocol and
codec it names.

Example::

    protocol, codec = content_type(b"application/json; charset=utf-8")  # ("connect", "json")
    json_codec = JsonCodec(route.request_proto, route.response_proto)
    request_bytes = json_codec.request(b'{"customerId": "c-1"}')
"""

from __future__ import annotations

from typing import Literal

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.protobuf.message import Message as ProtoMessage

__all__ = ["Codec", "JsonCodec", "Protocol", "content_type"]

Protocol = Literal["connect", "connect-stream", "grpc-web"]
Codec = Literal["proto", "json"]

_TYPES: dict[bytes, tuple[Protocol, Codec]] = {
    b"application/proto": ("connect", "proto"),
    b"application/json": ("connect", "json"),
    b"application/connect+proto": ("connect-stream", "proto"),
    b"application/connect+json": ("connect-stream", "json"),
    b"application/grpc-web": ("grpc-web", "proto"),
    b"application/grpc-web+proto": ("grpc-web", "proto"),
    b"application/grpc-web+json": ("grpc-web", "json"),
}


def content_type(value: bytes | None) -> tuple[Protocol, Codec] | None:
    """The protocol and codec a ``content-type`` names; ``None``: one not served."""
    if value is None:
        return None
    return _TYPES.get(value.split(b";", 1)[0].strip().lower())


def response_type(protocol: Protocol, codec: Codec) -> bytes:
    """The ``content-type`` of a successful response in ``protocol`` with ``codec``."""
    if protocol == "connect":
        return b"application/" + codec.encode()
    if protocol == "connect-stream":
        return b"application/connect+" + codec.encode()
    return b"application/grpc-web+" + codec.encode()


class JsonCodec:
    """JSON <-> protobuf bytes for one method (proto3 JSON, lowerCamelCase names out).

    Unknown fields in a request are ignored (a newer browser client stays
    compatible, as Connect's own servers do); JSON that does not fit the
    message -- not an object, a field of the wrong type, invalid UTF-8,
    nested too deeply -- raises ``DecodeError`` saying why, which the app
    answers as a malformed request (``invalid_argument``).
    """

    __slots__ = ("_request", "_response")

    def __init__(self, request: type[ProtoMessage], response: type[ProtoMessage]) -> None:
        self._request = request
        self._response = response

    def request(self, body: bytes) -> bytes:
        """The request's protobuf bytes from its JSON ``body`` (``DecodeError``: a misfit)."""
        if not body:
            body = b"{}"
        elif body[:1] != b"{" and body.lstrip()[:1] != b"{":
            raise DecodeError("the request must be a JSON object")
        message = self._request()
        try:
            json_format.Parse(body, message, ignore_unknown_fields=True)
        except (json_format.ParseError, UnicodeDecodeError, ValueError) as exc:
            text = str(exc)
            if "recursion" in text:
                text = "the JSON is nested too deeply"
            raise DecodeError(text) from None
        return message.SerializeToString()

    def response(self, data: bytes) -> bytes:
        """The JSON of the response whose protobuf bytes are ``data``."""
        message = self._response.FromString(data)
        return json_format.MessageToJson(message, indent=None).encode()
