"""The HTTP side: the aiohttp app, the BOSH and WebSocket endpoints, health and metrics."""
