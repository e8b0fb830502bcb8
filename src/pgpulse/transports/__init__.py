"""Transports: how events leave the server (WebSocket, Server-Sent Events)."""
