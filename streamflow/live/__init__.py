"""The live view: a small WebSocket page showing the stream as it flows."""
