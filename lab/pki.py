"""Certificates of the lab: each cluster's CA, serving certificate and per-port TLS.

Every cluster has its own CA (the `<cluster>-ca` Secret in mgmt holds it for workload
clusters) and a serving certificate issued by it for 127.0.0.1/localhost and the in-cluster
names. Keys are EC P-256: a CA costs about 0.3 ms, so a 500-cluster lab creates them at
start; the serving certificate and its SSLContext (0.6 ms for SSL_CTX_new alone) are made
on a port's first handshake (`ServingTLS`).
"""

from __future__ import annotations

import hashlib
import ipaddress
import ssl
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SERVING_VALIDITY = timedelta(days=365)  # kubeadm's default for the apiserver certificate
_CA_VALIDITY = timedelta(days=3650)
_BACKDATE = timedelta(minutes=5)
_SERVING_NAMES = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class KeyPair:
    """A PEM certificate and its PEM (PKCS#8, unencrypted) private key."""

    cert_pem: bytes
    key_pem: bytes

    @property
    def cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)

    def dump(self) -> dict[str, str]:
        return {"cert": self.cert_pem.decode(), "key": self.key_pem.decode()}

    @classmethod
    def load(cls, data: dict[str, str]) -> KeyPair:
        return cls(data["cert"].encode(), data["key"].encode())


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        key_cert_sign=ca,
        crl_sign=ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        encipher_only=False,
        decipher_only=False,
    )


def _sign(builder: x509.CertificateBuilder, key: Any) -> x509.Certificate:
    algorithm = (
        None
        if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey)
        else hashes.SHA256()
    )
    return builder.sign(key, algorithm)


def _private_key(pem: bytes) -> Any:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(
        key,
        ec.EllipticCurvePrivateKey
        | rsa.RSAPrivateKey
        | ed25519.Ed25519PrivateKey
        | ed448.Ed448PrivateKey,
    ):
        raise ValueError("the CA key must be an EC, RSA or Ed25519/Ed448 private key")
    return key


def create_ca(common_name: str = "kubernetes", organization: str = "") -> KeyPair:
    """A self-signed CA (kubeadm names its cluster CA `kubernetes`)."""
    key = _key()
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    name = x509.Name(attributes)
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + _CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    cert = _sign(builder, key)
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def issue(
    issuer: KeyPair | None,
    *,
    common_name: str,
    not_after: datetime,
    not_before: datetime | None = None,
    dns_names: tuple[str, ...] | list[str] = (),
    ip_addresses: tuple[str, ...] | list[str] = (),
    is_ca: bool = False,
    usages: tuple[x509.ObjectIdentifier, ...] = (ExtendedKeyUsageOID.SERVER_AUTH,),
) -> KeyPair:
    """A certificate with a fresh EC key, signed by `issuer` (self-signed when None).

    ValueError when the issuer's key cannot sign."""
    key = _key()
    subject = (
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        if common_name
        else x509.Name([])
    )
    if issuer is None:
        issuer_name, signing_key = subject, key
    else:
        issuer_name, signing_key = issuer.cert.subject, _private_key(issuer.key_pem)
    start = not_before or min(datetime.now(UTC) - _BACKDATE, not_after - SERVING_VALIDITY)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(_usage(ca=is_ca), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signing_key.public_key()),
            critical=False,
        )
    )
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    if usages and not is_ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
    if is_ca:
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
    cert = _sign(builder, signing_key)
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def issue_server_cert(ca: KeyPair, *, not_after: datetime | None = None) -> KeyPair:
    """The API server's serving certificate, signed by `ca`; expired when `not_after` is
    past (then valid for the year before it)."""
    return issue(
        ca,
        common_name="kube-apiserver",
        not_after=not_after or datetime.now(UTC) + SERVING_VALIDITY,
        dns_names=_SERVING_NAMES,
        ip_addresses=(LOOPBACK,),
    )


# ---- bundles -------------------------------------------------------------------------


def certificates(bundle_pem: bytes) -> list[x509.Certificate]:
    """The certificates of a PEM bundle; ValueError when it holds none or is malformed."""
    try:
        certs = x509.load_pem_x509_certificates(bundle_pem)
    except ValueError as exc:
        raise ValueError(f"not a PEM certificate bundle: {exc}") from None
    return certs


def signer_of(bundle_pem: bytes, key_pem: bytes) -> KeyPair:
    """The CA of `bundle_pem` whose public key matches `key_pem` (a `<cluster>-ca` Secret's
    tls.crt and tls.key), as a KeyPair; ValueError saying why when there is none."""
    try:
        key = _private_key(key_pem)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"tls.key is not a usable private key: {exc}") from None
    public = _public_der(key.public_key())
    for cert in certificates(bundle_pem):
        if _public_der(cert.public_key()) == public:
            if not _is_ca(cert):
                raise ValueError(f"the certificate matching tls.key ({_subject(cert)}) is not a CA")
            return KeyPair(cert.public_bytes(serialization.Encoding.PEM), key_pem)
    raise ValueError("tls.key matches no certificate of tls.crt")


def _public_der(public: Any) -> bytes:
    return bytes(
        public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _subject(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string()


def fingerprint(cert: x509.Certificate) -> str:
    return "sha256:" + hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def describe(cert: x509.Certificate) -> dict[str, Any]:
    """What reports show of a certificate."""
    return {
        "subject": _subject(cert),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": format(cert.serial_number, "x"),
        "notBefore": _iso(cert.not_valid_before_utc),
        "notAfter": _iso(cert.not_valid_after_utc),
        "fingerprint": fingerprint(cert),
    }


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---- TLS -------------------------------------------------------------------------------


def server_ssl_context(server: KeyPair) -> ssl.SSLContext:
    """An SSLContext serving `server` (the ssl module only loads keys from files)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = Path(tmp, "tls.crt"), Path(tmp, "tls.key")
        cert.write_bytes(server.cert_pem)
        key.touch(mode=0o600)
        key.write_bytes(server.key_pem)
        context.load_cert_chain(cert, key)
    return context


def client_ssl_context(ca_cert_pem: bytes) -> ssl.SSLContext:
    """An SSLContext trusting only `ca_cert_pem` (a cluster's bundle; benches and tests)."""
    return ssl.create_default_context(cadata=ca_cert_pem.decode())


def handshake_error(server: ssl.SSLContext, trust_pem: bytes, host: str = LOOPBACK) -> str | None:
    """Why a TLS client trusting only `trust_pem` would refuse `server` (None: it accepts).

    A real handshake through memory BIOs with OpenSSL's verification, as a client
    connecting to `host` would do it."""
    try:
        client = ssl.create_default_context(cadata=trust_pem.decode())
    except (ssl.SSLError, ValueError) as exc:
        return f"unusable CA bundle: {exc}"
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    near = client.wrap_bio(c_in, c_out, server_hostname=host)
    far = server.wrap_bio(s_in, s_out, server_side=True)
    done = {id(near): False, id(far): False}
    for _ in range(8):
        for end in (near, far):
            if done[id(end)]:
                continue
            try:
                end.do_handshake()
                done[id(end)] = True
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLCertVerificationError as exc:
                return str(exc.verify_message)
            except ssl.SSLError as exc:
                if end is near:
                    return str(exc.reason or exc)
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if done[id(near)]:
            return None
    return "handshake did not complete"


class ServingTLS:
    """One cluster port's TLS: its signing CA, trust bundle and serving certificate.

    It stands in for the port's SSLContext: asyncio only calls `wrap_bio` on the context a
    server listens with, so every handshake goes to the current context, and `renew()`
    takes effect on the next handshake without restarting anything. The serving
    certificate (with the notAfter fixed at creation) and its context are made on first
    use.
    """

    def __init__(
        self,
        signer: KeyPair,
        trust_pem: bytes,
        not_after: datetime,
        serving: KeyPair | None = None,
    ) -> None:
        self.signer = signer
        self.trust_pem = trust_pem
        self.not_after = not_after
        self._serving = serving
        self._context: ssl.SSLContext | None = None

    @classmethod
    def create(cls, cluster: str, *, days: float | None = None) -> ServingTLS:
        ca = create_ca(organization=f"lab:{cluster}")
        return cls(ca, ca.cert_pem, not_after_in(days))

    def renew(self, signer: KeyPair | None = None, *, not_after: datetime | None = None) -> None:
        """A new serving certificate from `signer` (default: the current one)."""
        if signer is not None:
            self.signer = signer
        self.not_after = not_after or not_after_in(None)
        self._serving, self._context = None, None

    @property
    def serving(self) -> KeyPair:
        if self._serving is None:
            self._serving = issue_server_cert(self.signer, not_after=self.not_after)
        return self._serving

    def context(self) -> ssl.SSLContext:
        if self._context is None:
            self._context = server_ssl_context(self.serving)
        return self._context

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        return self.context().wrap_bio(incoming, outgoing, server_side, server_hostname, session)

    def dump(self) -> dict[str, Any]:
        return {
            "signer": self.signer.dump(),
            "trust": self.trust_pem.decode(),
            "notAfter": self.not_after.isoformat(),
            "serving": self.serving.dump(),
        }

    @classmethod
    def load(cls, data: dict[str, Any]) -> ServingTLS:
        return cls(
            KeyPair.load(data["signer"]),
            data["trust"].encode(),
            datetime.fromisoformat(data["notAfter"]),
            KeyPair.load(data["serving"]),
        )


def not_after_in(days: float | None) -> datetime:
    """Now plus `days` (default: a fresh serving certificate's validity), to the second."""
    delta = SERVING_VALIDITY if days is None else timedelta(days=days)
    return (datetime.now(UTC) + delta).replace(microsecond=0)
