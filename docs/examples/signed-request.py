#!/usr/bin/env python3
"""Sends one request signed as upstream dffmpeg 0.4 clients sign it (auth.md section 2.2), with the standard library.

usage: signed-request.py CLIENT_ID HMAC_KEY METHOD PATH [JSON_BODY]
   eg: signed-request.py client01 "$KEY" GET /jobs
The coordinator address comes from DFFMPEG_COORDINATOR_URL (default http://127.0.0.1:8000).
"""
import base64, hashlib, hmac, os, sys, time, urllib.error, urllib.parse, urllib.request
client_id, key, method, path = sys.argv[1:5]
body = sys.argv[5].encode() if len(sys.argv) > 5 else b""
ts = str(int(time.time()))
# Upstream signing covers the path without its query string (auth.md section 2.2).
signed_path = urllib.parse.unquote(path.split("?", 1)[0])
canonical = f"{method}|{signed_path}|{ts}|{hashlib.sha256(body).hexdigest()}"
sig = base64.b64encode(hmac.new(base64.b64decode(key), canonical.encode(), hashlib.sha256).digest()).decode()
req = urllib.request.Request(os.environ.get("DFFMPEG_COORDINATOR_URL", "http://127.0.0.1:8000") + path, data=body or None, method=method, headers={
    "x-dffmpeg-client-id": client_id, "x-dffmpeg-timestamp": ts, "x-dffmpeg-signature": sig,
    "content-type": "application/json"})
try:
    print(urllib.request.urlopen(req).read().decode())
except urllib.error.HTTPError as err:
    print(err.code, err.read().decode(), file=sys.stderr)
    sys.exit(1)
