"""boshd: an XMPP connection manager for BOSH (XEP-0124/0206) and WebSocket (RFC 7395)."""

__version__ = "0.1.0"
