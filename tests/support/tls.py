"""Certificates for HTTPS tests: a throwaway CA (trustme) and a 127.0.0.1 server cert."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass
class TLSFiles:
    ca: trustme.CA
    chain: Path  # the server's certificate chain (PEM)
    key: Path  # its private key (PEM)
    bundle: Path  # the CA's certificate, as a bundle a leader is given (--ca-file)

    def server(self) -> dict[str, str]:
        """uvicorn's keywords to serve HTTPS with this certificate."""
        return {"ssl_certfile": str(self.chain), "ssl_keyfile": str(self.key)}

    def trusting(self) -> ssl.SSLContext:
        """A client context that trusts the CA."""
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context


def tls_files(folder: Path) -> TLSFiles:
    """A new CA and a certificate for 127.0.0.1 it signed, written under ``folder``."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    files = TLSFiles(ca, folder / "chain.pem", folder / "key.pem", folder / "ca.pem")
    for i, pem in enumerate(cert.cert_chain_pems):
        pem.write_to_path(str(files.chain), append=i > 0)
    cert.private_key_pem.write_to_path(str(files.key))
    ca.cert_pem.write_to_path(str(files.bundle))
    return files
