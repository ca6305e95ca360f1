"""Ed25519 identities: keys, domain-separated signatures, public key text form, key files.

Theory of operation
-------------------
A member of a network is its 32-byte Ed25519 public key; the matching 32-byte seed never leaves the
member's machine. This module is the only place that touches seeds.

* **Domain separation.** Every signature covers ``len(domain) (2 bytes, big-endian) + domain +
  message``. Callers build ``domain`` from a fixed protocol label, the network's genesis hash and the
  message type, so a signature made for one purpose (a handshake, a vote, an update) in one network
  can never be replayed as another. The length prefix makes the split between domain and message
  unambiguous. A domain over ``DOMAIN_BYTES_MAX`` is a caller bug (`LocalProtocolError`); anything
  wrong with what a peer sent (length, key, signature) is one `SignatureError`.
* **Text form.** A public key is written as 64 lowercase hex characters, and only that spelling is
  accepted, so a key has one text form (configs can compare keys as strings). Parsing also checks
  that the bytes are a valid Ed25519 point of large order (libsodium's conversion to Curve25519
  rejects anything else), so a typo is caught when the config loads, not at the first handshake.
* **Key files.** One line, ``qora-p2p-ed25519-v1 <hex seed>\\n``, mode 0600. Writing goes through a
  temporary file in the same directory (created 0600 with ``O_EXCL``, fsynced) that is then moved into
  place, so a crash never leaves a half-written key, and nobody else can read the seed at any time.
  Reading refuses a file that grants any permission to group or others, as ssh does.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
from pathlib import Path

import nacl.bindings
import nacl.exceptions
import nacl.signing

from qora_p2p.errors import KeyFileError, KeyFormatError, LocalProtocolError, SignatureError

__all__ = [
    "DOMAIN_BYTES_MAX",
    "KEY_FILE_HEADER",
    "PUBLIC_KEY_BYTES",
    "SEED_BYTES",
    "SIGNATURE_BYTES",
    "CachingVerifier",
    "Identity",
    "parse_public_key",
    "public_key_hex",
    "read_key_file",
    "verify",
    "write_key_file",
]

PUBLIC_KEY_BYTES = 32  # Ed25519 public key
SEED_BYTES = 32  # Ed25519 secret seed; the 64-byte libsodium secret key is derived from it
SIGNATURE_BYTES = 64  # Ed25519 signature
DOMAIN_BYTES_MAX = 1024  # a label + a 32-byte genesis hash + a type name fit many times over
DOMAIN_LENGTH_BYTES = 2  # big-endian length prefix of the domain; holds DOMAIN_BYTES_MAX
KEY_FILE_HEADER = "qora-p2p-ed25519-v1"  # format and version of a key file; bump on any change
KEY_FILE_BYTES_MAX = 4096  # a valid key file is 85 bytes; never read an arbitrary file into memory
KEY_FILE_MODE = 0o600  # owner read/write only, like ssh private keys

assert DOMAIN_BYTES_MAX < 1 << (8 * DOMAIN_LENGTH_BYTES)
assert len(KEY_FILE_HEADER) + 1 + 2 * SEED_BYTES + 1 < KEY_FILE_BYTES_MAX

_PUBLIC_KEY_TEXT = re.compile(r"[0-9a-f]{64}")  # explicit ranges: ASCII only, lowercase only
_HEX_TEXT = re.compile(r"[0-9a-fA-F]*")


def _signed_bytes(domain: bytes, message: bytes) -> bytes:
    """The exact bytes a signature covers. A bad domain is the caller's bug, not the peer's."""
    if not isinstance(domain, bytes):
        raise LocalProtocolError(f"signature domain must be bytes, got {type(domain).__name__}")
    if len(domain) > DOMAIN_BYTES_MAX:
        raise LocalProtocolError(
            f"signature domain of {len(domain)} bytes exceeds DOMAIN_BYTES_MAX {DOMAIN_BYTES_MAX}"
        )
    if not isinstance(message, bytes | bytearray | memoryview):
        raise LocalProtocolError(f"signed message must be bytes, got {type(message).__name__}")
    return len(domain).to_bytes(DOMAIN_LENGTH_BYTES, "big") + domain + message


class Identity:
    """An Ed25519 signing identity. The seed is readable (to write a key file) but never printed."""

    __slots__ = ("_public_key", "_signing_key")

    def __init__(self, seed: bytes) -> None:
        """Prefer `generate` or `from_seed`; this is `from_seed`."""
        if not isinstance(seed, bytes) or len(seed) != SEED_BYTES:
            raise KeyFormatError(f"an Ed25519 seed is exactly {SEED_BYTES} bytes, got {_describe(seed)}")
        self._signing_key = nacl.signing.SigningKey(seed)
        self._public_key = bytes(self._signing_key.verify_key)

    @classmethod
    def generate(cls) -> Identity:
        """A fresh identity from the operating system's CSPRNG."""
        return cls(secrets.token_bytes(SEED_BYTES))

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        """The identity of a 32-byte seed (deterministic: same seed, same keys).

        Raises:
            KeyFormatError: ``seed`` is not exactly 32 bytes.
        """
        return cls(seed)

    @property
    def public_key(self) -> bytes:
        """The 32-byte Ed25519 public key: this member's name in the network."""
        return self._public_key

    @property
    def seed(self) -> bytes:
        """The 32-byte secret seed. Handle with care: whoever has it is this member."""
        return bytes(self._signing_key)

    def sign(self, domain: bytes, message: bytes) -> bytes:
        """Sign ``message`` under ``domain`` (see the module docstring for the exact bytes).

        Sign a digest rather than a large payload: the cost is then independent of the payload.

        Returns:
            The 64-byte Ed25519 signature.

        Raises:
            LocalProtocolError: ``domain`` is not bytes or is over ``DOMAIN_BYTES_MAX`` bytes.
        """
        signature = self._signing_key.sign(_signed_bytes(domain, message)).signature
        assert len(signature) == SIGNATURE_BYTES
        return signature

    def __repr__(self) -> str:
        return f"Identity(public_key={public_key_hex(self._public_key)})"


def verify(public_key: bytes, domain: bytes, message: bytes, signature: bytes) -> None:
    """Check that ``signature`` is ``public_key``'s signature of ``message`` under ``domain``.

    Raises:
        SignatureError: the key or signature has the wrong type or length, the key is not a valid
            point, or the signature does not verify.
        LocalProtocolError: ``domain`` is not bytes or is over ``DOMAIN_BYTES_MAX`` bytes.
    """
    signed = _signed_bytes(domain, message)
    if not isinstance(public_key, bytes) or len(public_key) != PUBLIC_KEY_BYTES:
        raise SignatureError(f"public key must be {PUBLIC_KEY_BYTES} bytes, got {_describe(public_key)}")
    if not isinstance(signature, bytes) or len(signature) != SIGNATURE_BYTES:
        raise SignatureError(f"signature must be {SIGNATURE_BYTES} bytes, got {_describe(signature)}")
    try:
        nacl.bindings.crypto_sign_open(signature + signed, public_key)
    except nacl.exceptions.BadSignatureError:
        raise SignatureError(
            f"signature does not verify for key {public_key_hex(public_key)} and domain {domain!r}"
        ) from None


class CachingVerifier:
    """`verify` with its verdicts remembered, for many in-process members that check the same
    signatures (the simulator, the core fuzzer). At most ``limit`` verdicts are kept (the memo is
    emptied when full); a failed check raises the same error `verify` raises."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"a verdict cache holds at least 1 entry, got {limit}")
        self.limit = limit
        self.verdicts: dict[tuple[bytes, bytes, bytes, bytes], bool] = {}

    def __call__(self, public_key: bytes, domain: bytes, message: bytes, signature: bytes) -> None:
        cache_key = (public_key, domain, message, signature)
        verdict = self.verdicts.get(cache_key)
        if verdict is None:
            try:
                verify(public_key, domain, message, signature)
                verdict = True
            except (SignatureError, LocalProtocolError):
                verdict = False
            if len(self.verdicts) >= self.limit:
                self.verdicts.clear()
            self.verdicts[cache_key] = verdict
        if not verdict:
            verify(public_key, domain, message, signature)  # raises the real error


def _describe(value: object) -> str:
    return f"{len(value)} bytes" if isinstance(value, bytes) else type(value).__name__


def public_key_hex(public_key: bytes) -> str:
    """The text form of a public key: 64 lowercase hex characters.

    Raises:
        KeyFormatError: ``public_key`` is not 32 bytes.
    """
    if not isinstance(public_key, bytes) or len(public_key) != PUBLIC_KEY_BYTES:
        raise KeyFormatError(f"a public key is {PUBLIC_KEY_BYTES} bytes, got {_describe(public_key)}")
    return public_key.hex()


def parse_public_key(text: str) -> bytes:
    """Parse the text form of a public key and check that it is a usable Ed25519 key.

    Raises:
        KeyFormatError: not a str, not exactly 64 lowercase hex characters, or not a valid point.
    """
    if not isinstance(text, str):
        raise KeyFormatError(f"a public key must be given as text, got {type(text).__name__}")
    if len(text) != 2 * PUBLIC_KEY_BYTES:
        raise KeyFormatError(
            f"a public key is {2 * PUBLIC_KEY_BYTES} hex characters, got {len(text)}: {text[:80]!r}"
        )
    if _PUBLIC_KEY_TEXT.fullmatch(text) is None:
        raise KeyFormatError(f"a public key is lowercase hex (0-9, a-f), got {text!r}")
    public_key = bytes.fromhex(text)
    try:
        nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(public_key)
    except nacl.exceptions.CryptoError:
        raise KeyFormatError(f"{text} is not a valid Ed25519 public key (not a curve point)") from None
    return public_key


def write_key_file(path: str | os.PathLike[str], identity: Identity, *, overwrite: bool = False) -> None:
    """Write ``identity``'s seed to a new key file with mode 0600, atomically.

    The file is complete or absent, whatever happens: it is written and fsynced under a temporary
    name in the same directory, then moved into place (a hard link when it must not overwrite, which
    fails atomically if the name was taken meanwhile).

    Raises:
        KeyFileError: the file exists and ``overwrite`` is false, or it cannot be written.
    """
    target = Path(path)
    if not overwrite and (target.exists() or target.is_symlink()):
        raise KeyFileError(f"key file {target} already exists; refusing to overwrite it")
    content = f"{KEY_FILE_HEADER} {identity.seed.hex()}\n".encode("ascii")
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(8)}.tmp")
    try:
        descriptor = os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY, KEY_FILE_MODE)
    except OSError as error:
        raise KeyFileError(f"cannot create key file in {target.parent}: {error.strerror}") from None
    try:
        try:
            os.fchmod(descriptor, KEY_FILE_MODE)  # the umask may have removed bits; make it exact
            written = os.write(descriptor, content)
            assert written == len(content)  # a regular file takes a short write whole
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        _move_into_place(temporary, target, overwrite=overwrite)
        _fsync_directory(target.parent)
    except OSError as error:
        raise KeyFileError(f"cannot write key file {target}: {error.strerror}") from None
    finally:
        temporary.unlink(missing_ok=True)


def _move_into_place(temporary: Path, target: Path, *, overwrite: bool) -> None:
    if overwrite:
        os.replace(temporary, target)
        return
    try:
        os.link(temporary, target)
    except FileExistsError:
        raise KeyFileError(f"key file {target} already exists; refusing to overwrite it") from None


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable; platforms that cannot open a directory skip this."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def read_key_file(path: str | os.PathLike[str]) -> Identity:
    """Load an identity from a key file written by `write_key_file`.

    Raises:
        KeyFileError: missing, unreadable, not a regular file, readable by group or others, too
            large, wrong header, bad hex, or a seed of the wrong length. The message says which.
    """
    source = Path(path)
    try:
        descriptor = os.open(source, os.O_RDONLY)
    except FileNotFoundError:
        raise KeyFileError(f"key file {source} does not exist") from None
    except OSError as error:
        raise KeyFileError(f"cannot open key file {source}: {error.strerror}") from None
    try:
        status = os.fstat(descriptor)  # of the file we opened, not of whatever the name is now
        if not stat.S_ISREG(status.st_mode):
            raise KeyFileError(f"key file {source} is not a regular file")
        if status.st_mode & 0o077:
            raise KeyFileError(
                f"key file {source} is readable by others (mode {stat.S_IMODE(status.st_mode):04o}); "
                f"run chmod 600 {source}"
            )
        data = os.read(descriptor, KEY_FILE_BYTES_MAX + 1)
    except OSError as error:
        raise KeyFileError(f"cannot read key file {source}: {error.strerror}") from None
    finally:
        os.close(descriptor)
    return Identity.from_seed(_parse_key_file(source, data))


def _parse_key_file(source: Path, data: bytes) -> bytes:
    if len(data) > KEY_FILE_BYTES_MAX:
        raise KeyFileError(f"key file {source} is over {KEY_FILE_BYTES_MAX} bytes: not a key file")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise KeyFileError(f"key file {source} is not ASCII text: not a key file") from None
    header, _, seed_text = text.removesuffix("\n").partition(" ")
    if header != KEY_FILE_HEADER:
        raise KeyFileError(
            f"key file {source} has header {header[:40]!r}, expected {KEY_FILE_HEADER!r}"
        )
    if _HEX_TEXT.fullmatch(seed_text) is None or len(seed_text) % 2:
        raise KeyFileError(f"key file {source}: the seed is not hex")
    seed = bytes.fromhex(seed_text)
    if len(seed) != SEED_BYTES:
        raise KeyFileError(f"key file {source}: the seed is {len(seed)} bytes, expected {SEED_BYTES}")
    return seed

