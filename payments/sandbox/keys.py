"""Demo RSA key pairs for the Alipay sandbox, as PEM files in one directory (mode 0600, directory 0700).

Two pairs, as in a real Alipay integration:

- the app key pair: we sign requests with `app_private_key.pem` (PKCS#1, what alipay-sdk-python needs); the sandbox
  (standing in for Alipay) checks them with `app_public_key.pem`, the key a merchant uploads to Alipay;
- the "alipay" key pair: the sandbox signs responses and notifications with `alipay_private_key.pem`; we verify them
  with `alipay_public_key.pem` (SubjectPublicKeyInfo), the key Alipay shows a merchant.

These are demo keys for local sandboxes and tests, never production secrets."""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

APP_PRIVATE_KEY = "app_private_key.pem"
APP_PUBLIC_KEY = "app_public_key.pem"
ALIPAY_PRIVATE_KEY = "alipay_private_key.pem"
ALIPAY_PUBLIC_KEY = "alipay_public_key.pem"
_FILES = (APP_PRIVATE_KEY, APP_PUBLIC_KEY, ALIPAY_PRIVATE_KEY, ALIPAY_PUBLIC_KEY)


@dataclass(frozen=True)
class AlipayKeys:
    """PEM texts of both key pairs."""

    app_private_key: str  # PKCS#1 "BEGIN RSA PRIVATE KEY"
    app_public_key: str  # "BEGIN PUBLIC KEY"
    alipay_private_key: str  # PKCS#1
    alipay_public_key: str  # "BEGIN PUBLIC KEY"


def _new_pair(bits: int) -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode("ascii")
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )
    return private, public


def _write_private(path: Path, text: str) -> None:
    """Create with mode 0600 from the start (no window where the file is world-readable), atomically."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def generate_alipay_keys(directory: str | os.PathLike[str], *, bits: int = 2048) -> AlipayKeys:
    """Generate both pairs into `directory`, replacing any there."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    app_private, app_public = _new_pair(bits)
    alipay_private, alipay_public = _new_pair(bits)
    keys = AlipayKeys(app_private, app_public, alipay_private, alipay_public)
    for name, text in zip(_FILES, (app_private, app_public, alipay_private, alipay_public), strict=True):
        _write_private(folder / name, text)
    return keys


def load_alipay_keys(directory: str | os.PathLike[str]) -> AlipayKeys:
    """Load both pairs; FileNotFoundError when any file is missing."""
    folder = Path(directory)
    texts = [(folder / name).read_text("ascii") for name in _FILES]
    return AlipayKeys(*texts)


def load_or_create_alipay_keys(directory: str | os.PathLike[str]) -> AlipayKeys:
    """The pairs in `directory`, generated on first use. A half-written set (some files missing) is regenerated."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock_fd = os.open(folder / ".keys.lock", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)  # two processes starting at once must not mix pairs
        if all((folder / name).is_file() for name in _FILES):
            return load_alipay_keys(folder)
        return generate_alipay_keys(folder)
    finally:
        os.close(lock_fd)
