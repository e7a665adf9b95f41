"""`baton`, the command line over Baton's admin API (/admin/v1).

A client only: it needs httpx, typer and the standard library, never the app's own packages,
so it can be installed and shipped on its own (e.g. in a deployment pipeline's image).
"""
