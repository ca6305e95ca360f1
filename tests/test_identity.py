"""Ed25519 identities: domain-separated signatures, public key text form, key files."""

import os
import stat

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qora_p2p.errors import KeyFileError, KeyFormatError, LocalProtocolError, SignatureError
from qora_p2p.identity import (
    DOMAIN_BYTES_MAX,
    KEY_FILE_HEADER,
    CachingVerifier,
    Identity,
    parse_public_key,
    public_key_hex,
    read_key_file,
    verify,
    write_key_file,
)

SEED = bytes(range(32))
DOMAIN = b"qora-p2p/test/v1" + bytes(32)
MESSAGE = b"an update digest"


@pytest.fixture
def identity():
    return Identity.from_seed(SEED)


def test_sign_verify_round_trip(identity):
    """A signature verifies under the same key, domain and message."""
    signature = identity.sign(DOMAIN, MESSAGE)
    assert len(signature) == 64
    verify(identity.public_key, DOMAIN, MESSAGE, signature)


@given(
    seed=st.binary(min_size=32, max_size=32),
    domain=st.binary(max_size=64),
    message=st.binary(max_size=256),
)
def test_sign_verify_round_trip_any_input(seed, domain, message):
    """Any seed, domain and message round trip, and the seed is recovered from the identity."""
    identity = Identity.from_seed(seed)
    assert identity.seed == seed and len(identity.public_key) == 32
    verify(identity.public_key, domain, message, identity.sign(domain, message))


def test_from_seed_is_deterministic_and_generate_is_not():
    """The same seed gives the same key; generated identities differ."""
    assert Identity.from_seed(SEED).public_key == Identity.from_seed(SEED).public_key
    assert Identity.generate().public_key != Identity.generate().public_key


@pytest.mark.parametrize("seed", [b"", bytes(31), bytes(33), "00" * 32])
def test_from_seed_rejects_wrong_size(seed):
    """A seed that is not exactly 32 bytes is a KeyFormatError."""
    with pytest.raises(KeyFormatError, match="exactly 32 bytes"):
        Identity.from_seed(seed)


def test_repr_hides_the_seed(identity):
    """repr shows the public key and never the seed."""
    text = repr(identity)
    assert public_key_hex(identity.public_key) in text
    assert SEED.hex() not in text


def test_domain_is_length_prefixed(identity):
    """Moving bytes between domain and message changes what is signed."""
    signature = identity.sign(b"ab", b"c")
    with pytest.raises(SignatureError):
        verify(identity.public_key, b"a", b"bc", signature)


def test_wrong_domain_fails(identity):
    """A signature does not verify under another domain."""
    signature = identity.sign(DOMAIN, MESSAGE)
    with pytest.raises(SignatureError, match="does not verify"):
        verify(identity.public_key, DOMAIN + b"x", MESSAGE, signature)


def test_wrong_message_fails(identity):
    """A signature does not verify for another message."""
    signature = identity.sign(DOMAIN, MESSAGE)
    with pytest.raises(SignatureError, match="does not verify"):
        verify(identity.public_key, DOMAIN, MESSAGE + b"!", signature)


@pytest.mark.parametrize("bit", [0, 7, 255, 511])
def test_flipped_signature_bit_fails(identity, bit):
    """Flipping any bit of a signature makes it fail."""
    signature = bytearray(identity.sign(DOMAIN, MESSAGE))
    signature[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(SignatureError):
        verify(identity.public_key, DOMAIN, MESSAGE, bytes(signature))


def test_truncated_signature_fails(identity):
    """A signature of the wrong length is a SignatureError naming the length."""
    signature = identity.sign(DOMAIN, MESSAGE)
    with pytest.raises(SignatureError, match="63 bytes"):
        verify(identity.public_key, DOMAIN, MESSAGE, signature[:-1])


def test_wrong_key_fails(identity):
    """A signature does not verify under another member's key."""
    signature = identity.sign(DOMAIN, MESSAGE)
    with pytest.raises(SignatureError, match="does not verify"):
        verify(Identity.generate().public_key, DOMAIN, MESSAGE, signature)


@pytest.mark.parametrize("key", [bytes(31), bytes(33), "ab" * 32, None])
def test_malformed_key_fails(identity, key):
    """A public key of the wrong type or length is a SignatureError, not a crash."""
    with pytest.raises(SignatureError, match="public key"):
        verify(key, DOMAIN, MESSAGE, identity.sign(DOMAIN, MESSAGE))


def test_invalid_point_key_fails(identity):
    """A 32-byte key that is not a usable point (here the identity, of small order) fails."""
    small_order = bytes([1]) + bytes(31)
    with pytest.raises(SignatureError):
        verify(small_order, DOMAIN, MESSAGE, identity.sign(DOMAIN, MESSAGE))


def test_oversized_domain_is_a_local_error(identity):
    """A domain over DOMAIN_BYTES_MAX is our bug, on both sides."""
    domain = bytes(DOMAIN_BYTES_MAX + 1)
    with pytest.raises(LocalProtocolError, match="1025 bytes"):
        identity.sign(domain, MESSAGE)
    with pytest.raises(LocalProtocolError, match="1025 bytes"):
        verify(identity.public_key, domain, MESSAGE, bytes(64))
    identity.sign(bytes(DOMAIN_BYTES_MAX), MESSAGE)  # the limit itself is allowed


def test_public_key_text_round_trip(identity):
    """The text form is 64 lowercase hex characters and parses back to the key."""
    text = public_key_hex(identity.public_key)
    assert len(text) == 64 and text == text.lower()
    assert parse_public_key(text) == identity.public_key


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("zz" * 32, "lowercase hex"),
        ("AB" * 32, "lowercase hex"),
        (" " + "ab" * 31 + "a", "lowercase hex"),
        ("ab" * 31, "64 hex characters, got 62"),
        ("ab" * 33, "64 hex characters, got 66"),
        (b"ab" * 32, "text"),
    ],
)
def test_parse_public_key_rejects_bad_text(text, problem):
    """Bad hex, wrong length and non-text are each a KeyFormatError naming the problem."""
    with pytest.raises(KeyFormatError, match=problem):
        parse_public_key(text)


@pytest.mark.parametrize(
    "point",
    [
        "01" + "00" * 31,  # the identity element: small order
        "ec" + "ff" * 30 + "7f",  # y = p - 1: small order
        "ed" + "ff" * 30 + "7f",  # y = p: not canonical
    ],
)
def test_parse_public_key_rejects_invalid_point(point):
    """Well-formed hex that is not a usable Ed25519 point is a KeyFormatError."""
    with pytest.raises(KeyFormatError, match="not a valid Ed25519 public key"):
        parse_public_key(point)


def test_parse_public_key_is_a_value_error():
    """KeyFormatError is a ValueError, so config parsers can treat it as one."""
    with pytest.raises(ValueError):
        parse_public_key("nope")


def test_key_file_round_trip(tmp_path, identity):
    """A written key file reads back as the same identity and has the documented content."""
    path = tmp_path / "node.key"
    write_key_file(path, identity)
    assert read_key_file(path).public_key == identity.public_key
    assert path.read_text(encoding="ascii") == f"{KEY_FILE_HEADER} {SEED.hex()}\n"
    assert [entry.name for entry in tmp_path.iterdir()] == ["node.key"]  # no temporary left behind


def test_key_file_mode_is_0600_whatever_the_umask(tmp_path, identity):
    """The key file is created owner-only even under a permissive umask."""
    previous = os.umask(0o000)
    try:
        write_key_file(tmp_path / "node.key", identity)
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "node.key").stat().st_mode) == 0o600


def test_key_file_refuses_overwrite(tmp_path, identity):
    """An existing key file is kept unless overwrite=True."""
    path = tmp_path / "node.key"
    write_key_file(path, identity)
    other = Identity.generate()
    with pytest.raises(KeyFileError, match="already exists"):
        write_key_file(path, other)
    assert read_key_file(path).public_key == identity.public_key
    write_key_file(path, other, overwrite=True)
    assert read_key_file(path).public_key == other.public_key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [entry.name for entry in tmp_path.iterdir()] == ["node.key"]


def test_key_file_write_into_missing_directory(tmp_path, identity):
    """A key file cannot be written into a directory that does not exist."""
    with pytest.raises(KeyFileError, match="cannot create"):
        write_key_file(tmp_path / "missing" / "node.key", identity)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o601])
def test_key_file_rejects_group_or_other_permissions(tmp_path, identity, mode):
    """A key file granting any permission to group or others is refused with a chmod hint."""
    path = tmp_path / "node.key"
    write_key_file(path, identity)
    path.chmod(mode)
    with pytest.raises(KeyFileError, match=f"readable by others.*run chmod 600 {path}"):
        read_key_file(path)


def test_key_file_missing(tmp_path):
    """A missing key file is a KeyFileError saying so."""
    with pytest.raises(KeyFileError, match="does not exist"):
        read_key_file(tmp_path / "absent.key")


def test_key_file_not_a_regular_file(tmp_path):
    """A directory is not a key file."""
    directory = tmp_path / "dir.key"
    directory.mkdir(mode=0o700)
    with pytest.raises(KeyFileError, match="not a regular file"):
        read_key_file(directory)


def test_key_file_unreadable(tmp_path, identity):
    """A key file path that cannot be opened (here: through a regular file) is a KeyFileError."""
    write_key_file(tmp_path / "node.key", identity)
    with pytest.raises(KeyFileError, match=r"cannot open key file .*Not a directory"):
        read_key_file(tmp_path / "node.key" / "inner.key")


def _key_file(tmp_path, content: bytes):
    path = tmp_path / "node.key"
    descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(content)
    return path


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"ssh-ed25519 " + SEED.hex().encode() + b"\n", "has header 'ssh-ed25519'"),
        (b"qora-p2p-ed25519-v2 " + SEED.hex().encode() + b"\n", "has header 'qora-p2p-ed25519-v2'"),
        (SEED.hex().encode() + b"\n", "has header"),
        (b"", "has header ''"),
        (b"qora-p2p-ed25519-v1 " + b"zz" * 32 + b"\n", "not hex"),
        (b"qora-p2p-ed25519-v1 " + SEED.hex().encode()[:-1] + b"\n", "not hex"),
        (b"qora-p2p-ed25519-v1 " + SEED.hex().encode() + b" \n", "not hex"),
        (b"qora-p2p-ed25519-v1 " + SEED.hex().encode()[:-2] + b"\n", "seed is 31 bytes, expected 32"),
        (b"qora-p2p-ed25519-v1 " + SEED.hex().encode() + b"00\n", "seed is 33 bytes, expected 32"),
        (b"\xff" * 10, "not ASCII"),
        (b"a" * 5000, "over 4096 bytes"),
    ],
)
def test_key_file_rejects_malformed_content(tmp_path, content, problem):
    """Wrong header, bad hex, wrong seed length and non-key files each get a clear KeyFileError."""
    with pytest.raises(KeyFileError, match=problem):
        read_key_file(_key_file(tmp_path, content))


def test_key_file_without_final_newline_is_accepted(tmp_path):
    """A key file edited by hand without the final newline still loads."""
    path = _key_file(tmp_path, f"{KEY_FILE_HEADER} {SEED.hex()}".encode())
    assert read_key_file(path).seed == SEED


def test_a_caching_verifier_remembers_verdicts_and_raises_what_verify_raises():
    """Each verdict is computed once while it is kept; a bad signature raises SignatureError every
    time, a bad domain LocalProtocolError; the memo never holds more than its limit."""
    identity = Identity.from_seed(bytes(32))
    good = identity.sign(b"domain", b"message")
    verifier = CachingVerifier(2)
    verifier(identity.public_key, b"domain", b"message", good)
    assert verifier.verdicts == {(identity.public_key, b"domain", b"message", good): True}
    for _ in range(2):
        with pytest.raises(SignatureError):
            verifier(identity.public_key, b"domain", b"other", good)
    with pytest.raises(LocalProtocolError):
        verifier(identity.public_key, b"x" * 10_000, b"message", good)
    assert len(verifier.verdicts) <= 2
    with pytest.raises(ValueError):
        CachingVerifier(0)
