"""Key material: a CurveZMQ keypair for transport and an Ed25519 key that signs chain heads.

The signing key never leaves the node: heads carry only the public key. Secret files are
written 0600 and refused when world-readable.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fpmon.config import check_private
from fpmon.errors import FpmonError

CURVE_NAME = "agent"  # agent.key (public) and agent.key_secret, as zmq.auth writes them
SIGNING_FILE = "signing.key"
SIGNING_PUB_FILE = "signing.pub"


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def keygen(out: Path, name: str = CURVE_NAME) -> dict[str, str]:
    """Create `name.key`, `name.key_secret`, `signing.key`, `signing.pub` in `out` (all 0600)."""
    import zmq
    import zmq.auth

    if not zmq.has("curve"):
        raise FpmonError("this libzmq has no CURVE support: install pyzmq with libsodium")
    out.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o700)
    for f in (f"{name}.key", f"{name}.key_secret", SIGNING_FILE):
        if (out / f).exists():
            raise FpmonError(f"{out / f} exists: refusing to overwrite a key; use another --out")
    pub, secret = zmq.auth.create_certificates(str(out), name)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write_private(out / SIGNING_FILE, pem)
    pub_hex = signing_public_hex(key)
    _write_private(out / SIGNING_PUB_FILE, (pub_hex + "\n").encode())
    for f in (pub, secret):
        os.chmod(f, 0o600)
    return {
        "curve_public": str(pub),
        "curve_secret": str(secret),
        "signing_key": str(out / SIGNING_FILE),
        "signing_public_hex": pub_hex,
    }


def signing_public_hex(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return raw.hex()


def public_bytes(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def load_signing_key(keys_dir: Path | None, state_dir: Path) -> Ed25519PrivateKey:
    """From keys_dir when configured; otherwise the node's own key in state_dir (made once).

    The key is the node's identity across restarts: a fresh key per start would make every
    restart look like a different signer to the verifier.
    """
    if keys_dir:
        path = Path(keys_dir) / SIGNING_FILE
        if not path.is_file():
            raise FpmonError(f"{path}: no signing key; run `fpmon keygen --out {keys_dir}`")
    else:
        path = Path(state_dir) / SIGNING_FILE
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            key = Ed25519PrivateKey.generate()
            _write_private(
                path,
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                ),
            )
    check_private(path, "signing key")
    try:
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except ValueError as e:
        raise FpmonError(f"{path}: not a PEM Ed25519 key ({e}); run `fpmon keygen` again") from None
    if not isinstance(loaded, Ed25519PrivateKey):
        raise FpmonError(f"{path}: not an Ed25519 key; run `fpmon keygen` again")
    return loaded


def load_curve_server(keys_dir: Path, name: str = CURVE_NAME) -> tuple[bytes, bytes]:
    """(public, secret) z85 keys of this node; refuses a world-readable secret."""
    import zmq.auth

    path = Path(keys_dir) / f"{name}.key_secret"
    if not path.is_file():
        raise FpmonError(f"{path}: no Curve secret key; run `fpmon keygen --out {keys_dir}`")
    check_private(path, "Curve secret key")
    pub, secret = zmq.auth.load_certificate(str(path))
    if not secret:
        raise FpmonError(f"{path}: holds no secret key; run `fpmon keygen` again")
    return pub, secret


def load_allowlist(folder: Path | None, what: str) -> set[bytes]:
    """z85 public keys in `folder`. zmq.auth only *logs* a folder it cannot read: we refuse."""
    import zmq.auth

    if not folder:
        raise FpmonError(f"curve is on but no {what} folder is configured: set it in [security]")
    if not Path(folder).is_dir():
        raise FpmonError(f"{folder}: no such {what} folder; create it and copy public keys in")
    keys = set(zmq.auth.load_certificates(str(folder)))
    if not keys:
        raise FpmonError(
            f"{folder}: no public keys (*.key) found for {what}: copy their `.key` files in"
        )
    return keys
