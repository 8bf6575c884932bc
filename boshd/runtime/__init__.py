"""The asyncio layer: one task per session, and the registry of sessions."""
