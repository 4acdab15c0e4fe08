"""A bounded request loop for policy-change tests: GETs URL one request
at a time (a fresh connection each, 5 s timeout) until STOP exists, at
most SECONDS seconds and MAX requests, printing `start end status` per
request (Unix seconds; status ERR on a failure). Usage: load_log.py URL
STOP SECONDS MAX."""
import http.client
import os
import sys
import time
import urllib.parse

url, stop, seconds, limit = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
u = urllib.parse.urlsplit(url)
began = time.time()
for _ in range(limit):
    if os.path.exists(stop) or time.time() - began > seconds:
        break
    t0 = time.time()
    try:
        c = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=5)
        c.request("GET", u.path or "/")
        r = c.getresponse()
        r.read()
        status = str(r.status)
        c.close()
    except Exception as e:  # noqa: BLE001 - every failure is a result here
        status = "ERR:" + type(e).__name__
    print(f"{t0:.6f} {time.time():.6f} {status}", flush=True)
    time.sleep(0.005)
