"""Files users download are served as downloads, never as pages of this site.

A translated .html keeps the markup of the document it came from, scripts included. Served inline
from the app's own origin (Chainlit's /project/file/... answers with the file's type, text/html)
it would run with the reader's login. This ASGI middleware marks every file response as an
attachment the browser must not sniff, and sandboxes it should it be rendered anyway.
"""
from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Chainlit's session files, the history's files (app.py get_file), the gateway's translated files.
FILE_PATHS = ("/project/file/", "/baton/files/", "/libretranslate/download_file/")


class DownloadHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope["path"]).startswith(FILE_PATHS):
            await self.app(scope, receive, send)
            return

        async def send_marked(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if not headers.get("content-disposition", "").startswith("attachment"):
                    headers["Content-Disposition"] = "attachment"
                headers["X-Content-Type-Options"] = "nosniff"
                headers["Content-Security-Policy"] = "sandbox"
            await send(message)

        await self.app(scope, receive, send_marked)
