#!/usr/bin/env python3
"""How soon replica B sees a write gate closed through replica A.

For each of COUNT closes: sends `PUT /admin/maintenance` to A's admin API (in
a thread: it answers only once every replica drained) and, from the moment
it is sent, probes in three more threads, each on its keep-alive connection,
one request after another: a write through B (`POST
/v2/bench/probeN/blobs/uploads/` over TLS, a new repository each time; B
runs with `closed_writes = "reject"`, so a new push stopped by a draining or
closed gate answers 503 at once; the time is when that request was sent),
B's `GET /admin/gc` (`.gate.local_state` leaves `open`) and A's (the same,
for the replica that was asked). Records the first time each saw the gate
closed, then switches maintenance off through A, waits until B admits
writes again, and pauses 300 ms plus a random part of the 250 ms poll
period so the closes fall at every phase of the replicas' polling.
Prints one JSON object: the times in ms per close for `b_write`, `b_admin`,
`a_admin`, and how long A's PUT took.
Usage: gate_watch.py A_ADMIN B_ADMIN B_TLS CA COUNT   (host:port each)
"""
import http.client
import json
import random
import ssl
import sys
import threading
import time

LIMIT_S = 5.0


def main():
    a_admin, b_admin, b_tls, ca, count = sys.argv[1:6]
    count = int(count)
    ctx = ssl.create_default_context(cafile=ca)
    host, port = b_tls.rsplit(":", 1)
    conns = {}
    probes = [0]

    def conn(kind):
        if kind not in conns:
            if kind == "b_write":
                conns[kind] = http.client.HTTPSConnection(host, int(port), context=ctx, timeout=10)
            else:
                conns[kind] = http.client.HTTPConnection(a_admin if kind == "a_admin" else b_admin, timeout=10)
        return conns[kind]

    def ask(kind):
        """True when `kind` sees the gate closed."""
        c = conn(kind)
        try:
            if kind == "b_write":
                # A new repository each time: while B drains, a new push is
                # stopped at its first request, unless its repository has a
                # push under way (an earlier probe's session would be one).
                probes[0] += 1
                path = f"/v2/bench/probe{probes[0]}/blobs/uploads/"
                c.request("POST", path, body=b"", headers={"Content-Length": "0"})
                r = c.getresponse()
                r.read()
                return r.status == 503
            c.request("GET", "/admin/gc")
            r = c.getresponse()
            body = json.loads(r.read())
            return body["gate"]["local_state"] != "open"
        except (OSError, http.client.HTTPException):
            conns.pop(kind, None).close()
            raise

    def admin(method, path, body=None):
        c = http.client.HTTPConnection(a_admin, timeout=30)
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data else {}
        c.request(method, path, body=data, headers=headers)
        r = c.getresponse()
        r.read()
        c.close()
        return r.status

    out = {"b_write": [], "b_admin": [], "a_admin": [], "a_put": []}
    for _ in range(count):
        put = {}

        def close():
            t = time.perf_counter()
            put["status"] = admin("PUT", "/admin/maintenance", {"reason": "bench"})
            put["ms"] = (time.perf_counter() - t) * 1000

        seen = {}

        def probe(kind):
            while time.perf_counter() - t0 < LIMIT_S:
                sent = time.perf_counter()
                if ask(kind):
                    # A write stopped by the gate was stopped when it arrived.
                    seen[kind] = ((sent if kind == "b_write" else time.perf_counter()) - t0) * 1000
                    return

        threads = [threading.Thread(target=close)] + [
            threading.Thread(target=probe, args=(k,)) for k in ("b_write", "b_admin", "a_admin")
        ]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if put.get("status") != 200:
            sys.exit(f"PUT /admin/maintenance through A answered {put.get('status')}")
        for kind in ("b_write", "b_admin", "a_admin"):
            if kind not in seen:
                sys.exit(f"{kind} did not see the gate closed within {LIMIT_S} s")
            out[kind].append(round(seen[kind], 1))
        out["a_put"].append(round(put["ms"], 1))
        if admin("DELETE", "/admin/maintenance") != 200:
            sys.exit("DELETE /admin/maintenance through A failed")
        t = time.perf_counter()
        while ask("b_write") or ask("b_admin"):
            if time.perf_counter() - t > LIMIT_S:
                sys.exit(f"B did not open within {LIMIT_S} s")
            time.sleep(0.005)
        time.sleep(0.3 + random.random() * 0.25)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
