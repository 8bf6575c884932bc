"""Bytes <-> typed values at the edge: hardened parsing, schema checks, serialisation."""
