#!/usr/bin/env python3
"""The registry's own floor for one tag delete, measured directly.

For each tag of REPO (tagged s000..sNNN), makes the registry calls that lie
on the path of a regate tag delete by overwrite, one after another over one
keep-alive HTTP connection (no TLS, no regate): GET the manifest, DELETE by
tag (2.8 answers 400), PUT a unique dummy manifest to the tag, DELETE the
dummy by digest, HEAD the tag (404). Each dummy's config is uploaded before
the clock starts (regate stages it ahead too). Prints the median and p99 in
ms. Usage: delete_floor.py HOST:PORT REPO COUNT
"""
import hashlib
import http.client
import json
import os
import sys
import time

OCI = "application/vnd.oci.image.manifest.v1+json"
ACCEPT = ", ".join([OCI, "application/vnd.oci.image.index.v1+json",
                    "application/vnd.docker.distribution.manifest.v2+json",
                    "application/vnd.docker.distribution.manifest.list.v2+json"])


def main():
    host, repo, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    conn = http.client.HTTPConnection(host)

    def call(method, path, body=None, headers=None, want=None):
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        resp.read()
        if want is not None and resp.status != want:
            sys.exit(f"{method} {path}: {resp.status}, expected {want}")
        return resp

    times = []
    for i in range(count):
        tag = f"s{i:03d}"
        config = json.dumps({"nonce": os.urandom(16).hex(), "tag": tag}).encode()
        cdigest = "sha256:" + hashlib.sha256(config).hexdigest()
        loc = call("POST", f"/v2/{repo}/blobs/uploads/", want=202).getheader("location")
        loc = loc.split(host, 1)[-1]
        call("PUT", f"{loc}&digest={cdigest}", config,
             {"content-type": "application/octet-stream"}, want=201)
        dummy = json.dumps({"schemaVersion": 2, "mediaType": OCI,
                            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                       "digest": cdigest, "size": len(config)},
                            "layers": []}).encode()
        ddigest = "sha256:" + hashlib.sha256(dummy).hexdigest()
        start = time.perf_counter()
        call("GET", f"/v2/{repo}/manifests/{tag}", headers={"accept": ACCEPT}, want=200)
        call("DELETE", f"/v2/{repo}/manifests/{tag}", want=400)
        call("PUT", f"/v2/{repo}/manifests/{tag}", dummy, {"content-type": OCI}, want=201)
        call("DELETE", f"/v2/{repo}/manifests/{ddigest}", want=202)
        call("HEAD", f"/v2/{repo}/manifests/{tag}", headers={"accept": ACCEPT}, want=404)
        times.append((time.perf_counter() - start) * 1000)
        call("DELETE", f"/v2/{repo}/blobs/{cdigest}", want=202)
    times.sort()
    print(f"{times[len(times) // 2]:.1f} {times[int(len(times) * 0.99)]:.1f}")


if __name__ == "__main__":
    main()
