"""An HTTPS server outside the mesh, for TLS origination.

  tls_server.py gen DIR            writes a test CA, a server certificate
                                   for secure.example.com, a client
                                   certificate and an unrelated CA
  tls_server.py serve PORT DIR [--mutual]
                                   answers "tls-ok sni=... client=..." over
                                   TLS; --mutual requires a client
                                   certificate from the test CA
"""
import datetime
import http.server
import os
import ssl
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def pem_key(key):
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def cert(subject, issuer_name, issuer_key, key, ca, sans=(), usage=None):
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        b = b.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
    if sans:
        b = b.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]), critical=False
        )
    if usage:
        b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def gen(d):
    os.makedirs(d, exist_ok=True)
    for name in ("ca", "other-ca"):
        key = ec.generate_private_key(ec.SECP256R1())
        c = cert(name, x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]), key, key, True)
        write(f"{d}/{name}.pem", c.public_bytes(serialization.Encoding.PEM))
        write(f"{d}/{name}-key.pem", pem_key(key))
    ca_key = serialization.load_pem_private_key(open(f"{d}/ca-key.pem", "rb").read(), None)
    ca_name = x509.load_pem_x509_certificate(open(f"{d}/ca.pem", "rb").read()).subject
    for name, sans, usage in (
        ("server", ["secure.example.com"], ExtendedKeyUsageOID.SERVER_AUTH),
        ("client", [], ExtendedKeyUsageOID.CLIENT_AUTH),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        subject = "mesh-client" if name == "client" else "secure.example.com"
        c = cert(subject, ca_name, ca_key, key, False, sans, usage)
        write(f"{d}/{name}.pem", c.public_bytes(serialization.Encoding.PEM))
        write(f"{d}/{name}-key.pem", pem_key(key))


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        peer = self.connection.getpeercert()
        client = "none"
        if peer:
            client = dict(x[0] for x in peer["subject"]).get("commonName", "?")
        sni = getattr(self.connection, "sni", None) or "none"
        body = f"tls-ok sni={sni} client={client} path={self.path}\n".encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def serve(port, d, mutual):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(f"{d}/server.pem", f"{d}/server-key.pem")
    if mutual:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(f"{d}/ca.pem")

    def remember(sock, name, _ctx):
        sock.sni = name

    ctx.sni_callback = remember
    srv = http.server.ThreadingHTTPServer(("0.0.0.0", port), Handler)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    srv.handle_error = lambda *a: None
    srv.serve_forever()


if __name__ == "__main__":
    if sys.argv[1] == "gen":
        gen(sys.argv[2])
    else:
        serve(int(sys.argv[2]), sys.argv[3], "--mutual" in sys.argv[4:])
