#!/usr/bin/env python3
"""Start a real S3-compatible server (SeaweedFS `weed mini`) on 127.0.0.1 for marsh's tests.

Every listener is bound to loopback on a port picked free at start; the S3 API answers over plain
HTTP and over HTTPS with a certificate issued by a test CA made here (rustls refuses a self-signed
certificate that is its own CA, so there is a CA and a leaf). Readiness is checked by asking the S3
API until it answers, never by sleeping a fixed time.

    seaweed.py start STATE_DIR   # prints shell `export` lines; the server keeps running
    seaweed.py stop STATE_DIR    # stops it by the pid recorded at start

The exported variables are what the Rust tests read: MARSH_TEST_S3_ENDPOINT (http),
MARSH_TEST_S3_ENDPOINT_TLS (https), MARSH_TEST_S3_CA (PEM file), MARSH_TEST_S3_ACCESS_KEY,
MARSH_TEST_S3_SECRET_KEY, MARSH_TEST_S3_BUCKET, MARSH_TEST_S3_REGION.
"""

import datetime
import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

ACCESS_KEY = "marsh-test-key"
SECRET_KEY = "marsh-test-secret-0123456789"
BUCKET = "marsh-test"
REGION = "us-east-1"


def free_ports(n):
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def make_certs(state):
    """A test CA and a leaf for 127.0.0.1/localhost, made with the openssl command line."""
    ca_key, ca_crt = f"{state}/ca.key", f"{state}/ca.pem"
    key, csr, crt, ext = f"{state}/s3.key", f"{state}/s3.csr", f"{state}/s3.pem", f"{state}/s3.ext"
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", ca_key, "-out", ca_crt, "-days", "30", "-subj", "/CN=marsh test CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1")
    with open(ext, "w") as f:
        f.write("basicConstraints=critical,CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
                "extendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n")
    run("openssl", "x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial",
        "-out", crt, "-days", "30", "-extfile", ext)
    return ca_crt, crt, key


def head_bucket(endpoint):
    """A HeadBucket signed with AWS Signature V4 (the S3 API answers 403 to anything unsigned,
    bucket or no bucket); its HTTP status."""
    host = endpoint.split("://", 1)[1]
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    payload = hashlib.sha256(b"").hexdigest()
    headers = {"host": host, "x-amz-content-sha256": payload, "x-amz-date": amz_date}
    signed = ";".join(sorted(headers))
    canonical = "\n".join(["HEAD", f"/{BUCKET}", "", *(f"{k}:{headers[k]}" for k in sorted(headers)), "", signed, payload])
    scope = f"{day}/{REGION}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + SECRET_KEY).encode()
    for part in (day, REGION, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/{scope}, SignedHeaders={signed}, "
                                f"Signature={signature}")
    request = urllib.request.Request(f"{endpoint}/{BUCKET}", method="HEAD", headers=headers)
    try:
        return urllib.request.urlopen(request, timeout=2).status
    except urllib.error.HTTPError as e:
        return e.code


def wait_ready(endpoint, proc, log, deadline_s=120):
    """Until the S3 API answers and the test bucket exists: `weed mini -bucket` creates it only
    after the API is already up, and a test that starts in between finds no bucket. False if weed
    exited first (one of its ports was taken between picking it and binding it, say)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            if head_bucket(endpoint) == 200:
                return True
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit(f"SeaweedFS S3 at {endpoint} (bucket {BUCKET}) not ready after {deadline_s}s; see {log}")


def start(state):
    weed = os.path.join(os.path.dirname(sys.executable), "weed")
    os.makedirs(f"{state}/data", exist_ok=True)
    ca, cert, key = make_certs(state)
    config = f"{state}/s3.json"
    with open(config, "w") as f:
        json.dump({"identities": [{"name": "marsh", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                                   "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}, f)
    names = ["master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
             "filer.port.grpc", "s3.port", "s3.port.grpc", "s3.port.https", "admin.port", "admin.port.grpc",
             "webdav.port"]
    log = f"{state}/weed.log"
    # The ports are free when picked and bound by weed a moment later: another process can take
    # one in between, and weed then exits. Tried again with fresh ports, three times in all.
    for attempt in range(3):
        ports = dict(zip(names, free_ports(len(names))))
        args = [weed, "mini", f"-dir={state}/data", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-s3.config={config}",
                f"-s3.cert.file={cert}", f"-s3.key.file={key}", "-webdav=false", "-admin.ui=false",
                "-s3.port.iceberg=0", "-s3.port.lance=0",
                f"-bucket={BUCKET}"]
        args += [f"-{n}={p}" for n, p in ports.items()]
        with open(log, "ab") as out:
            out.write(f"--- attempt {attempt + 1}\n".encode())
            out.flush()
            proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        with open(f"{state}/weed.pid", "w") as f:
            f.write(str(proc.pid))
        http = f"http://127.0.0.1:{ports['s3.port']}"
        https = f"https://127.0.0.1:{ports['s3.port.https']}"
        if wait_ready(http, proc, log):
            break
        print(f"weed exited with {proc.returncode} before it was ready (attempt {attempt + 1}); see {log}",
              file=sys.stderr)
        shutil.rmtree(f"{state}/data", ignore_errors=True)
        os.makedirs(f"{state}/data", exist_ok=True)
    else:
        sys.exit(f"weed did not start in three attempts; see {log}")
    env = {
        "MARSH_TEST_S3_ENDPOINT": http,
        "MARSH_TEST_S3_ENDPOINT_TLS": https,
        "MARSH_TEST_S3_CA": ca,
        "MARSH_TEST_S3_ACCESS_KEY": ACCESS_KEY,
        "MARSH_TEST_S3_SECRET_KEY": SECRET_KEY,
        "MARSH_TEST_S3_BUCKET": BUCKET,
        "MARSH_TEST_S3_REGION": REGION,
    }
    with open(f"{state}/env.sh", "w") as f:
        for k, v in env.items():
            f.write(f"export {k}={v}\n")
    print(open(f"{state}/env.sh").read(), end="")


def stop(state):
    try:
        pid = int(open(f"{state}/weed.pid").read())
    except FileNotFoundError:
        return
    try:
        os.killpg(pid, signal.SIGTERM)
        for _ in range(100):
            os.kill(pid, 0)
            time.sleep(0.1)
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    os.remove(f"{state}/weed.pid")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("start", "stop"):
        sys.exit(__doc__)
    (start if sys.argv[1] == "start" else stop)(os.path.abspath(sys.argv[2]))
