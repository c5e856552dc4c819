"""The neutral data model: call records, states, events and webhook replies.

Engine, store, providers, webhooks and RPC all import from here; this package imports nothing
from any of them (only `daemon.errors`), so a store backend never depends on the engine.
"""
