"""XML namespaces boshd speaks (one place; pure constants)."""

BOSH_NS = "http://jabber.org/protocol/httpbind"  # XEP-0124 <body/>
XBOSH_NS = "urn:xmpp:xbosh"  # XEP-0206 attributes
XML_NS = "http://www.w3.org/XML/1998/namespace"
FRAMING_NS = "urn:ietf:params:xml:ns:xmpp-framing"  # RFC 7395 <open/>, <close/>
JABBER_CLIENT = "jabber:client"
STREAMS_NS = "http://etherx.jabber.org/streams"
STREAM_ERRORS_NS = "urn:ietf:params:xml:ns:xmpp-streams"
STANZAS_NS = "urn:ietf:params:xml:ns:xmpp-stanzas"
TLS_NS = "urn:ietf:params:xml:ns:xmpp-tls"
SASL_NS = "urn:ietf:params:xml:ns:xmpp-sasl"
BIND_NS = "urn:ietf:params:xml:ns:xmpp-bind"
SASL_CB_NS = "urn:xmpp:sasl-cb:0"  # XEP-0440 channel-binding advertisement
COMPRESS_FEATURE_NS = "http://jabber.org/features/compress"  # XEP-0138
