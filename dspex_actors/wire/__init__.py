"""The wire form shared by the bridge's client and server: msgpack payloads, errors
as gRPC's rich status, columns, events and each operation's messages."""
