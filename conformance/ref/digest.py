"""Content digests: the grammar, the hashes this implementation verifies, DiffIDs and ChainIDs.

image-spec descriptor.md § Digests gives the grammar; a digest is also used to build a blob's path
(`blobs/<alg>/<encoded>`), so one that does not parse must never reach the filesystem
(containers/image CVE-2024-3727, Docker CVE-2014-9358).
"""

from __future__ import annotations

import hashlib
import re

from conformance.ref.errors import LayoutError

# descriptor.md: algorithm ::= component (separator component)*; encoded ::= [a-zA-Z0-9=_-]+
_GRAMMAR = re.compile(r"^([a-z0-9]+(?:[+._-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$")

#: Registered algorithms this implementation can verify, with the exact form of their encoded part
#: (lowercase hex only: descriptor.md says [A-F] MUST NOT be used).
VERIFIABLE = {
    "sha256": re.compile(r"^[a-f0-9]{64}$"),
    "sha512": re.compile(r"^[a-f0-9]{128}$"),
}

CANONICAL = "sha256"


def parse_digest(digest: object) -> tuple[str, str]:
    """Split `alg:encoded`, refusing anything off the grammar or a registered algorithm's form.

    Unknown but grammatical algorithms parse (descriptor.md: they SHOULD pass validation); they fail
    only when someone asks to verify content against them (see `new_hash`).
    """
    if not isinstance(digest, str):
        raise LayoutError(f"digest {digest!r}: not a string")
    match = _GRAMMAR.match(digest)
    if match is None:
        raise LayoutError(f"digest {digest!r}: does not match the digest grammar (algorithm:encoded)")
    algorithm, encoded = match.group(1), match.group(2)
    form = VERIFIABLE.get(algorithm)
    if form is not None and not form.match(encoded):
        raise LayoutError(f"digest {digest!r}: a {algorithm} digest is {form.pattern[2:-1]} (lowercase hex)")
    return algorithm, encoded


def new_hash(digest: str) -> hashlib._Hash:
    """A fresh hash object for the digest's algorithm, to verify content against it."""
    algorithm, _ = parse_digest(digest)
    if algorithm not in VERIFIABLE:
        raise LayoutError(f"digest {digest!r}: algorithm {algorithm!r} is not supported for verification")
    return hashlib.new(algorithm)


def digest_bytes(data: bytes, algorithm: str = CANONICAL) -> str:
    """`sha256:<hex>` of some bytes: a blob's digest, or a layer's DiffID when the bytes are the tar."""
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def layer_digest(tar: bytes) -> str:
    """The digest of a layer tar as stored; for an uncompressed layer it is also its DiffID."""
    return digest_bytes(tar)


def diff_id(tar: bytes) -> str:
    """The DiffID of a layer: the digest of its *uncompressed* tar (config.md § Layer DiffID)."""
    return digest_bytes(tar)


def chain_id(diff_ids: list[str], *, faults: frozenset[str] = frozenset()) -> str:
    """ChainID(L0) = DiffID(L0); ChainID(L0..n) = Digest(ChainID(L0..n-1) + " " + DiffID(Ln)).

    config.md § Layer ChainID: it names the filesystem a stack of layers produces.
    """
    if not diff_ids:
        raise LayoutError("chain id of no layers is undefined")
    separator = "" if "chain-id-without-space" in faults else " "  # FAULT point
    chain = diff_ids[0]
    parse_digest(chain)
    for next_id in diff_ids[1:]:
        parse_digest(next_id)
        chain = digest_bytes(f"{chain}{separator}{next_id}".encode())
    return chain
