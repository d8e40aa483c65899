#!/usr/bin/env python3
"""Issues N certificates (default 10,000) from a CA engine over REST and checks that every serial is
positive, at most 20 octets, and unique; prints the rate. The scenario suite does the same for 30 s.

usage: METACRYPT_ADDR=https://127.0.0.1:8443 METACRYPT_TOKEN=... METACRYPT_CACERT=ca.pem \
       bench/ca_serials.py [--mount ca] [--profile web] [--cn www.example.com] [-n 10000]
The profile must exist and allow the common name.
"""
import argparse
import http.client
import json
import os
import ssl
import sys
import time
import urllib.parse

from cryptography import x509


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--mount", default="ca")
    p.add_argument("--profile", default="web")
    p.add_argument("--cn", default="www.example.com")
    p.add_argument("-n", type=int, default=10_000)
    a = p.parse_args()
    url = urllib.parse.urlparse(os.environ["METACRYPT_ADDR"])
    ctx = ssl.create_default_context(cafile=os.environ.get("METACRYPT_CACERT"))
    conn = http.client.HTTPSConnection(url.hostname, url.port, context=ctx)
    headers = {"Authorization": f"Bearer {os.environ['METACRYPT_TOKEN']}"}
    seen = set()
    started = time.time()
    for i in range(a.n):
        conn.request("POST", f"/v1/ca/{a.mount}/issue/{a.profile}", json.dumps({"common_name": a.cn}), headers)
        r = conn.getresponse()
        body = r.read()
        assert r.status == 200, body
        serial = x509.load_pem_x509_certificate(json.loads(body)["certificate"].encode()).serial_number
        assert 0 < serial and (serial.bit_length() + 8) // 8 <= 20, hex(serial)
        assert serial not in seen, hex(serial)
        seen.add(serial)
    elapsed = time.time() - started
    print(f"{a.n} issues in {elapsed:.1f} s ({a.n / elapsed:.0f}/s); all serials positive, <= 20 octets, unique")


if __name__ == "__main__":
    sys.exit(main())
