"""The XMPP server side: routing, the TCP/TLS connection, the stream splitter."""
