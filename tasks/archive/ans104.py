"""ANS-104 data items and bundles, and the Arweave format-2 transaction that carries a bundle.

Plain functions over bytes, no I/O. Signing is RSA-PSS (SHA-256, salt 32) with the archive wallet's JWK,
over Arweave's deep hash (SHA-384). The layout follows the ANS-104 spec; tests check the bytes against
arbundles, an independent verifier.

    data item: sig type (2 LE) | signature (512) | owner (512) | target flag [+32] | anchor flag [+32]
               | tag count (8 LE) | tag bytes (8 LE) | tags (Avro array of {name, value}) | data
    bundle:    item count (32 LE) | per item: size (32 LE) + raw id (32) | items
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

SIG_ARWEAVE = 1
SIG_LENGTH = 512
OWNER_LENGTH = 512
MAX_TAGS = 128
MAX_TAG_NAME_BYTES = 1024
MAX_TAG_VALUE_BYTES = 3072
MAX_TAG_BYTES = 4096  # the encoded tags of one item (arbundles' verify and bundlers refuse more)
MAX_CHUNK_SIZE = 256 * 1024
MIN_CHUNK_SIZE = 32 * 1024
PSS_SIGN = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
PSS_VERIFY = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO)

Tag = tuple[str, str]


class InvalidItem(ValueError):
    """Bytes that are not a well-formed, correctly signed data item (or bundle)."""


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# ------------------------------------------------------------------------------------------------ wallet
@dataclass(frozen=True)
class Wallet:
    key: rsa.RSAPrivateKey
    owner: bytes  # the public modulus n, 512 bytes

    @property
    def address(self) -> str:
        return b64url(hashlib.sha256(self.owner).digest())

    def sign(self, message: bytes) -> bytes:
        return self.key.sign(message, PSS_SIGN, hashes.SHA256())


def _int(text: str) -> int:
    return int.from_bytes(b64url_decode(text), "big")


def wallet_from_jwk(jwk: str | dict[str, Any]) -> Wallet:
    data = json.loads(jwk) if isinstance(jwk, str) else jwk
    public = rsa.RSAPublicNumbers(_int(data["e"]), _int(data["n"]))
    private = rsa.RSAPrivateNumbers(
        p=_int(data["p"]),
        q=_int(data["q"]),
        d=_int(data["d"]),
        dmp1=_int(data["dp"]),
        dmq1=_int(data["dq"]),
        iqmp=_int(data["qi"]),
        public_numbers=public,
    )
    owner = b64url_decode(data["n"])
    if len(owner) != OWNER_LENGTH:
        raise ValueError("the wallet is not a 4096-bit Arweave key")
    return Wallet(private.private_key(), owner)


def generate_jwk() -> dict[str, str]:
    """A new 4096-bit Arweave wallet as a JWK (sandbox and tests)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    n = key.private_numbers()

    def enc(value: int) -> str:
        return b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))

    return {
        "kty": "RSA",
        "e": enc(n.public_numbers.e),
        "n": enc(n.public_numbers.n),
        "d": enc(n.d),
        "p": enc(n.p),
        "q": enc(n.q),
        "dp": enc(n.dmp1),
        "dq": enc(n.dmq1),
        "qi": enc(n.iqmp),
    }


def verify_signature(owner: bytes, message: bytes, signature: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature

    key = rsa.RSAPublicNumbers(65537, int.from_bytes(owner, "big")).public_key()
    try:
        key.verify(signature, message, PSS_VERIFY, hashes.SHA256())
    except InvalidSignature:
        return False
    return True


# ------------------------------------------------------------------------------------------------ hashes
def deep_hash(data: Any) -> bytes:
    """Arweave's deep hash (SHA-384) of a blob or a nested list of blobs."""
    if isinstance(data, bytes | bytearray | memoryview):
        blob = bytes(data)
        tag = hashlib.sha384(b"blob" + str(len(blob)).encode()).digest()
        return hashlib.sha384(tag + hashlib.sha384(blob).digest()).digest()
    acc = hashlib.sha384(b"list" + str(len(data)).encode()).digest()
    for part in data:
        acc = hashlib.sha384(acc + deep_hash(part)).digest()
    return acc


# ------------------------------------------------------------------------------------------------ tags
def _zigzag_varint(value: int) -> bytes:
    n = (value << 1) ^ (value >> 63)
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_tags(tags: Sequence[Tag]) -> bytes:
    """Avro encoding of [{name: bytes, value: bytes}] as arbundles writes it (empty for no tags)."""
    if len(tags) > MAX_TAGS:
        raise ValueError(f"at most {MAX_TAGS} tags")
    if not tags:
        return b""
    out = bytearray(_zigzag_varint(len(tags)))
    for name, value in tags:
        for text, limit in ((name, MAX_TAG_NAME_BYTES), (value, MAX_TAG_VALUE_BYTES)):
            raw = text.encode()
            if not raw or len(raw) > limit:
                raise ValueError(
                    f"tag {name[:40]!r}: names 1-{MAX_TAG_NAME_BYTES} bytes, "
                    f"values 1-{MAX_TAG_VALUE_BYTES} bytes"
                )
            out += _zigzag_varint(len(raw)) + raw
    out += b"\x00"
    if len(out) > MAX_TAG_BYTES:
        raise ValueError(f"the tags encode to {len(out)} bytes; at most {MAX_TAG_BYTES}")
    return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if pos >= len(data):
            raise InvalidItem("truncated tags")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return (result >> 1) ^ -(result & 1), pos


def decode_tags(data: bytes) -> list[Tag]:
    tags: list[Tag] = []
    pos = 0
    while pos < len(data):
        count, pos = _read_varint(data, pos)
        if count == 0:
            break
        if count < 0:  # a block with its byte size
            count = -count
            _, pos = _read_varint(data, pos)
        for _ in range(count):
            pair = []
            for _ in range(2):
                size, pos = _read_varint(data, pos)
                pair.append(data[pos : pos + size].decode())
                pos += size
            tags.append((pair[0], pair[1]))
    return tags


# ------------------------------------------------------------------------------------------------ items
@dataclass(frozen=True)
class DataItem:
    raw: bytes

    @property
    def signature(self) -> bytes:
        return self.raw[2 : 2 + SIG_LENGTH]

    @property
    def id(self) -> str:
        return b64url(self.raw_id)

    @property
    def raw_id(self) -> bytes:
        return hashlib.sha256(self.signature).digest()

    def parts(self) -> dict[str, Any]:
        """owner, target, anchor, tags (raw and decoded) and data, or InvalidItem."""
        raw = self.raw
        if len(raw) < 2 + SIG_LENGTH + OWNER_LENGTH + 2 + 16:
            raise InvalidItem("too short for a data item")
        if int.from_bytes(raw[0:2], "little") != SIG_ARWEAVE:
            raise InvalidItem("not an Arweave-signed data item")
        pos = 2 + SIG_LENGTH
        owner = raw[pos : pos + OWNER_LENGTH]
        pos += OWNER_LENGTH
        fields = {}
        for name in ("target", "anchor"):
            flag = raw[pos]
            pos += 1
            if flag not in (0, 1):
                raise InvalidItem(f"bad {name} flag")
            fields[name] = raw[pos : pos + 32] if flag else b""
            pos += 32 if flag else 0
        count = int.from_bytes(raw[pos : pos + 8], "little")
        size = int.from_bytes(raw[pos + 8 : pos + 16], "little")
        pos += 16
        tag_bytes = raw[pos : pos + size]
        tags = decode_tags(tag_bytes)
        if len(tags) != count:
            raise InvalidItem("tag count does not match the tags")
        return {"owner": owner, **fields, "tag_bytes": tag_bytes, "tags": tags, "data": raw[pos + size :]}

    @property
    def data(self) -> bytes:
        return bytes(self.parts()["data"])

    @property
    def tags(self) -> list[Tag]:
        return list(self.parts()["tags"])

    def verify(self) -> bool:
        """Well-formed and signed by its owner (the gateway's word is not proof of that)."""
        try:
            p = self.parts()
        except (InvalidItem, UnicodeDecodeError):
            return False
        message = _item_message(p["owner"], p["target"], p["anchor"], p["tag_bytes"], p["data"])
        return verify_signature(p["owner"], message, self.signature)


def _item_message(owner: bytes, target: bytes, anchor: bytes, tag_bytes: bytes, data: bytes) -> bytes:
    return deep_hash([b"dataitem", b"1", str(SIG_ARWEAVE).encode(), owner, target, anchor, tag_bytes, data])


def create_data_item(wallet: Wallet, data: bytes, tags: Sequence[Tag], anchor: bytes = b"") -> DataItem:
    """Sign `data` with `tags` into a data item (its id is the SHA-256 of the signature)."""
    if anchor and len(anchor) != 32:
        raise ValueError("an anchor is 32 bytes")
    tag_bytes = encode_tags(tags)
    signature = wallet.sign(_item_message(wallet.owner, b"", anchor, tag_bytes, data))
    return assemble_item(signature, wallet.owner, b"", anchor, tags, data)


def assemble_item(
    signature: bytes, owner: bytes, target: bytes, anchor: bytes, tags: Sequence[Tag], data: bytes
) -> DataItem:
    """The bytes of a data item from its fields (to sign, or to rebuild one a gateway describes)."""
    tag_bytes = encode_tags(tags)
    raw = b"".join(
        [
            SIG_ARWEAVE.to_bytes(2, "little"),
            signature,
            owner,
            (b"\x01" + target) if target else b"\x00",
            (b"\x01" + anchor) if anchor else b"\x00",
            len(tags).to_bytes(8, "little"),
            len(tag_bytes).to_bytes(8, "little"),
            tag_bytes,
            data,
        ]
    )
    return DataItem(raw)


# ------------------------------------------------------------------------------------------------ bundles
def bundle_items(items: Sequence[DataItem]) -> bytes:
    header = bytearray(len(items).to_bytes(32, "little"))
    for item in items:
        header += len(item.raw).to_bytes(32, "little") + item.raw_id
    return bytes(header) + b"".join(item.raw for item in items)


def unbundle(data: bytes) -> list[tuple[str, DataItem]]:
    """(id in the header, item) for each item of a bundle; InvalidItem when the layout is broken."""
    if len(data) < 32:
        raise InvalidItem("too short for a bundle")
    count = int.from_bytes(data[:32], "little")
    if 32 + 64 * count > len(data):
        raise InvalidItem("bundle header longer than the bundle")
    pos = 32 + 64 * count
    out = []
    for i in range(count):
        entry = data[32 + 64 * i : 32 + 64 * (i + 1)]
        size = int.from_bytes(entry[:32], "little")
        out.append((b64url(entry[32:]), DataItem(data[pos : pos + size])))
        pos += size
    if pos != len(data):
        raise InvalidItem("bundle sizes do not add up to its length")
    return out


# ------------------------------------------------------------------------------------------------ L1 tx
def _chunks(data: bytes) -> list[tuple[bytes, int]]:
    """(SHA-256 of the chunk, end offset) per chunk, as arweave-js splits data."""
    out = []
    cursor = 0
    rest = data
    while len(rest) >= MAX_CHUNK_SIZE:
        size = MAX_CHUNK_SIZE
        following = len(rest) - MAX_CHUNK_SIZE
        if 0 < following < MIN_CHUNK_SIZE:
            size = -(-len(rest) // 2)
        cursor += size
        out.append((hashlib.sha256(rest[:size]).digest(), cursor))
        rest = rest[size:]
    out.append((hashlib.sha256(rest).digest(), cursor + len(rest)))
    return out


def _sha(*parts: bytes) -> bytes:
    return hashlib.sha256(b"".join(parts)).digest()


def _note(value: int) -> bytes:
    return value.to_bytes(32, "big")


@dataclass(frozen=True)
class Chunk:
    """One chunk of a transaction's data with its Merkle proof, as `POST /chunk` takes it."""

    start: int
    end: int  # exclusive
    data_path: bytes  # the branch proofs from the root down, then the leaf proof

    @property
    def offset(self) -> int:
        """The offset of the chunk's last byte (what the protocol calls the chunk's offset)."""
        return self.end - 1


def _tree(data: bytes) -> tuple[bytes, list[Chunk]]:
    """The Merkle root of the data's chunks (Arweave's `data_root`) and each chunk with its proof,
    as arweave-js builds them (`generateTransactionChunks`, `generateProofs`)."""
    leaves = _chunks(data)
    # a node: (id, max byte range, [(chunk index, proof so far below this node)])
    nodes: list[tuple[bytes, int, list[tuple[int, bytes]]]] = [
        (_sha(_sha(digest), _sha(_note(end))), end, [(index, digest + _note(end))])
        for index, (digest, end) in enumerate(leaves)
    ]
    while len(nodes) > 1:
        paired = []
        for i in range(0, len(nodes), 2):
            if i + 1 == len(nodes):
                paired.append(nodes[i])  # an odd node goes up as it is: no proof step
                continue
            (left, left_end, left_paths), (right, right_end, right_paths) = nodes[i], nodes[i + 1]
            step = left + right + _note(left_end)
            paths = [(k, step + path) for k, path in left_paths + right_paths]
            paired.append((_sha(_sha(left), _sha(right), _sha(_note(left_end))), right_end, paths))
        nodes = paired
    root, _, paths = nodes[0]
    bounds = [0] + [end for _, end in leaves]
    chunks = [Chunk(bounds[k], bounds[k + 1], path) for k, path in sorted(paths)]
    # data that ends on a chunk boundary has an empty last leaf: in the root, not uploaded (as arweave-js)
    return root, [c for c in chunks if c.end > c.start]


def data_root(data: bytes) -> bytes:
    """The Merkle root of the data's chunks (Arweave's `data_root`)."""
    return _tree(data)[0]


def chunk_proofs(data: bytes) -> list[Chunk]:
    """Every chunk of the data with its proof, in order (for `POST /chunk`)."""
    return _tree(data)[1]


BUNDLE_TAGS: tuple[Tag, ...] = (("Bundle-Format", "binary"), ("Bundle-Version", "2.0.0"))


def sign_transaction(
    wallet: Wallet, data: bytes, reward: int, last_tx: str, tags: Sequence[Tag] = BUNDLE_TAGS
) -> dict[str, Any]:
    """A signed format-2 transaction header for `data` (without the data itself)."""
    root = data_root(data)
    raw_tags = [(n.encode(), v.encode()) for n, v in tags]
    message = deep_hash(
        [
            b"2",
            wallet.owner,
            b"",
            b"0",
            str(reward).encode(),
            b64url_decode(last_tx),
            [[n, v] for n, v in raw_tags],
            str(len(data)).encode(),
            root,
        ]
    )
    signature = wallet.sign(message)
    return {
        "format": 2,
        "id": b64url(hashlib.sha256(signature).digest()),
        "last_tx": last_tx,
        "owner": b64url(wallet.owner),
        "tags": [{"name": b64url(n), "value": b64url(v)} for n, v in raw_tags],
        "target": "",
        "quantity": "0",
        "data": "",
        "data_size": str(len(data)),
        "data_root": b64url(root),
        "reward": str(reward),
        "signature": b64url(signature),
    }


def verify_transaction(tx: dict[str, Any], data: bytes) -> bool:
    owner = b64url_decode(tx["owner"])
    tags = [[b64url_decode(t["name"]), b64url_decode(t["value"])] for t in tx["tags"]]
    if tx["data_root"] != b64url(data_root(data)) or int(tx["data_size"]) != len(data):
        return False
    message = deep_hash(
        [
            b"2",
            owner,
            b64url_decode(tx["target"]),
            tx["quantity"].encode(),
            tx["reward"].encode(),
            b64url_decode(tx["last_tx"]),
            tags,
            tx["data_size"].encode(),
            b64url_decode(tx["data_root"]),
        ]
    )
    signature = b64url_decode(tx["signature"])
    return tx["id"] == b64url(hashlib.sha256(signature).digest()) and verify_signature(
        owner, message, signature
    )
