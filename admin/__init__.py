"""Baton's admin console and chat helpers: text in, engine calls out, markdown back.

Nothing here holds state between calls and nothing imports Chainlit: `app.py` does the
Chainlit wiring and hands this package plain strings and the `Engine`.
"""
