"""A small stand-in for the Hugging Face hub on 127.0.0.1: the five calls a push makes
(../shared/reference/hub_push.md), recording what arrives. Tokens: `hf_good` is accepted, anything
else gets 401; namespace `other` gets 403; repo names containing `broken` fail the commit with 500."""

from __future__ import annotations

import base64
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GOOD_TOKEN = "hf_good_0123456789abcdef"


class FakeHub:
    def __init__(self):
        self.requests: list[dict] = []
        self.commits: list[dict] = []
        self.created: list[dict] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _reply(self, status, body=None, headers=None):
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                hub.requests.append({"method": self.command, "path": self.path,
                                     "auth": self.headers.get("Authorization"), "body": body})
                if self.headers.get("Authorization") != f"Bearer {GOOD_TOKEN}":
                    return self._reply(401, {"error": "Invalid credentials"})
                path = self.path.split("?")[0]
                if self.command == "GET" and path == "/api/whoami-v2":
                    return self._reply(200, {"name": "me", "type": "user", "orgs": []})
                if self.command == "POST" and path == "/api/repos/create":
                    req = json.loads(body)
                    namespace = req.get("organization") or "me"
                    if namespace == "other":
                        return self._reply(403, {"error": "You don't have the rights to create a model under "
                                                          "this namespace"})
                    hub.created.append(req)
                    return self._reply(200, {"url": f"http://{self.headers['Host']}/{namespace}/{req['name']}"})
                if self.command == "HEAD" and "/resolve/" in path:
                    return self._reply(404, None, {"X-Error-Code": "EntryNotFound"})
                if self.command == "POST" and path == "/api/validate-yaml":
                    return self._reply(200, {"errors": [], "warnings": []})
                m = re.fullmatch(r"/api/models/([^/]+)/([^/]+)/preupload/main", path)
                if self.command == "POST" and m:
                    files = json.loads(body)["files"]
                    return self._reply(200, {"files": [{"path": f["path"], "uploadMode": "regular",
                                                        "shouldIgnore": False, "oid": None} for f in files]})
                m = re.fullmatch(r"/api/models/([^/]+)/([^/]+)/commit/main", path)
                if self.command == "POST" and m:
                    if "broken" in m.group(2):
                        return self._reply(500, {"error": "internal error"})
                    lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
                    files = {entry["value"]["path"]: base64.b64decode(entry["value"]["content"])
                             for entry in lines if entry["key"] == "file"}
                    hub.commits.append({"repo": f"{m.group(1)}/{m.group(2)}", "files": files})
                    oid = "a" * 40
                    return self._reply(200, {"commitUrl": f"http://{self.headers['Host']}/{m.group(1)}/"
                                                          f"{m.group(2)}/commit/{oid}",
                                             "commitOid": oid, "pullRequestUrl": None})
                return self._reply(404, {"error": f"no route {self.command} {path}"})

            do_GET = do_POST = do_HEAD = do_PUT = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
