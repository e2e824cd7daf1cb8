"""Outbound HTTP under the address guard: image downloads and vendor-API POSTs.

A foundation package: it imports only core modules (settings, errors).
"""
