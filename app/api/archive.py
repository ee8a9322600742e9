"""A bounded reader of `.npz` request bodies: bytes → one array per `.npy` member, and the JSON
object of `request.json`, or a 4xx naming the member — never an allocation a header asks for.

Python's `zipfile` trusts the sizes, flags and methods in the headers and decompresses bzip2 and
lzma members without any bound, so a few hundred bytes can ask for gigabytes. Here `zipfile`
only lists the central directory (its size is the body's); every member is then read from the
body's own bytes:

- only stored (0) and deflated (8) members, without encryption (flag bit 0), and each name once;
- a member's compressed bytes must lie inside the body; the declared uncompressed sizes of all
  members together at most `limit` bytes (413 above, before anything is inflated);
- a deflated member is inflated as a stream that stops one byte past its declared size: a member
  inflating to more (or less) than it declares is refused, whatever the headers claim; its
  CRC-32 is checked;
- an `.npy` header is parsed alone (`numpy.lib.format`, no pickles), and its shape × itemsize
  compared with the member's real size before the array is made (a view of the bytes read:
  of the body itself, read-only, for a stored member);
- the members of a large body are checked on every core at once, and a bad archive is refused
  at its first bad member in the archive's order, whichever thread found it;
- `request.json` is parsed with a bound on its nesting.
"""

import io
import json
import math
import struct
import zipfile
import zlib
from typing import Any

import ml_dtypes
import numpy as np

from app.core.errors import LimitExceeded, RequestError
from app.numerics.layout import for_each_on_every_core

Member = memoryview | bytearray
"""A member's uncompressed bytes: a view of the body when stored, inflated bytes when deflated."""

REQUEST_FIELDS_MEMBER = "request.json"
MAX_MEMBERS = 32
METHOD_NAMES = {
    0: "stored",
    1: "shrunk",
    6: "imploded",
    8: "deflated",
    9: "deflate64",
    12: "bzip2",
    14: "lzma",
    93: "zstandard",
    95: "xz",
    98: "ppmd",
    99: "AES-encrypted",
}
READ_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
MAX_JSON_DEPTH = 64
"""Deepest nesting of `request.json` (its fields nest two or three levels)."""
INFLATE_CHUNK_BYTES = 1 << 16
"""Compressed bytes handed to zlib at a time."""
PARALLEL_READ_BYTES = 1 << 20
"""Bodies of at least this many bytes have their members checked (CRC-32) and inflated on every
core at once (zlib releases the GIL); smaller ones in the calling thread."""
MAX_NPY_HEADER_BYTES = 12 + 10_000
"""The longest `.npy` preamble read: magic, version and length (12 bytes at most) and numpy's
own limit on the header (10,000 bytes, `numpy.lib.format`'s max_header_size)."""
FLOAT_KINDS = frozenset({"f2", "f4", "f8"})
_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")
_LOCAL_SIGNATURE = b"PK\x03\x04"
_ENCRYPTED = 0x1
_NOT_ZIP = "the body is not a readable zip archive (.npz)"


def read_npz(body: bytes, limit: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The fields of `request.json` (empty if absent) and one array per `.npy` member, named
    after its member without `.npy`; at most `limit` bytes inflated in all.

    Raises
    ------
    RequestError
        422 located at the member (`loc ["body", "<member>"]`): a method other than stored or
        deflated, encryption, a repeated name, a member outside the body, a wrong CRC or size,
        an unreadable `.npy` header or JSON, a dtype that is not a number type.
    LimitExceeded
        413: more than MAX_MEMBERS members, or more than `limit` bytes declared uncompressed.
    """
    view = memoryview(body)
    try:
        with zipfile.ZipFile(io.BytesIO(body)) as archive:
            members = archive.infolist()
    except (
        zipfile.BadZipFile,
        ValueError,
        struct.error,
        EOFError,
        OSError,
        UnicodeError,
        NotImplementedError,
    ):
        raise RequestError((), _NOT_ZIP, "npz_invalid") from None
    if len(members) > MAX_MEMBERS:
        raise LimitExceeded(f"the archive holds {len(members)} members, more than {MAX_MEMBERS}")
    _check_listing(members)
    declared = sum(member.file_size for member in members)
    if declared > limit:
        raise LimitExceeded(
            f"the archive expands to {declared} bytes (its members' declared sizes), more "
            f"than the {limit} this body may expand to: send its members stored (np.savez) or less "
            "compressed"
        )
    readings: list[Member | RequestError] = [RequestError((), _NOT_ZIP)] * len(members)

    def read(index: int) -> None:
        try:
            readings[index] = _member_bytes(view, members[index])
        except RequestError as error:
            readings[index] = error

    if len(body) >= PARALLEL_READ_BYTES:
        for_each_on_every_core(read, range(len(members)))
    else:
        for index in range(len(members)):
            read(index)
    fields: dict[str, Any] = {}
    arrays: dict[str, np.ndarray] = {}
    for member, data in zip(members, readings, strict=True):
        if isinstance(data, RequestError):  # the first bad member in the archive's order
            raise data
        if member.filename == REQUEST_FIELDS_MEMBER:
            fields = read_json_member(member.filename, data)
        else:
            name = member.filename.removesuffix(".npy")
            arrays[name] = read_npy(name, data)
    return fields, arrays


def _check_listing(members: list[zipfile.ZipInfo]) -> None:
    """422 at the first member with a repeated name, a name that is neither `.npy` nor
    request.json, a method other than stored or deflated, or encryption."""
    seen: set[str] = set()
    for member in members:
        name = member.filename
        if name in seen:
            raise RequestError(
                (name,), f"{name} appears twice in the archive: send each member once", "npz_member"
            )
        seen.add(name)
        if name != REQUEST_FIELDS_MEMBER and not name.endswith(".npy"):
            raise RequestError(
                (name,), "an .npz request holds .npy members and request.json only", "npz_member"
            )
        if member.flag_bits & _ENCRYPTED:
            raise RequestError((name,), f"{name} is encrypted: send it unencrypted", "npz_member")
        if member.compress_type not in READ_METHODS:
            method = METHOD_NAMES.get(member.compress_type, "unknown")
            raise RequestError(
                (name,),
                f"{name} is compressed with method {member.compress_type} ({method}); only "
                "stored (0) and deflated (8) members are read",
                "npz_method",
            )


def _member_bytes(view: memoryview, member: zipfile.ZipInfo) -> Member:
    """The uncompressed bytes of `member`, read from the body at its local header, checked
    against its declared size and CRC-32; never more than its declared size is inflated. A
    stored member is a view of the body (no copy)."""
    name = member.filename
    start = member.header_offset
    header = bytes(view[start : start + _LOCAL_HEADER.size]) if start >= 0 else b""
    if len(header) < _LOCAL_HEADER.size or header[:4] != _LOCAL_SIGNATURE:
        raise RequestError((name,), f"{name}: its local header is missing", "npz_invalid")
    fields = _LOCAL_HEADER.unpack(header)
    flags, name_length, extra_length = fields[3], fields[10], fields[11]
    if flags & _ENCRYPTED:
        raise RequestError((name,), f"{name} is encrypted: send it unencrypted", "npz_member")
    data_start = start + _LOCAL_HEADER.size + name_length + extra_length
    data_end = data_start + member.compress_size
    if data_end > len(view):
        raise RequestError(
            (name,), f"{name}: its data runs past the end of the body (truncated?)", "npz_invalid"
        )
    compressed = view[data_start:data_end]
    if member.compress_type == zipfile.ZIP_STORED:
        if member.compress_size != member.file_size:
            raise RequestError(
                (name,),
                f"{name} is stored with {member.compress_size} bytes but declares "
                f"{member.file_size}",
                "npz_invalid",
            )
        data: Member = compressed
    else:
        data = _inflate(name, compressed, member.file_size)
    if zlib.crc32(data) != member.CRC:
        raise RequestError((name,), f"{name}: its CRC-32 does not match its data", "npz_invalid")
    return data


def _inflate(name: str, compressed: memoryview, size: int) -> bytearray:
    """Raw deflate of `compressed`, stopped one byte past `size`: exactly `size` bytes or 422."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    out = bytearray()
    try:
        for offset in range(0, len(compressed), INFLATE_CHUNK_BYTES):
            pending: bytes | memoryview = compressed[offset : offset + INFLATE_CHUNK_BYTES]
            while pending and not inflater.eof:
                out += inflater.decompress(pending, size + 1 - len(out))
                if len(out) > size:
                    raise RequestError(
                        (name,),
                        f"{name} inflates to more than the {size} bytes it declares",
                        "npz_invalid",
                    )
                pending = inflater.unconsumed_tail
    except zlib.error as error:
        message = f"{name} is not valid deflate data: {error}"
        raise RequestError((name,), message, "npz_invalid") from None
    if not inflater.eof or len(out) != size:
        raise RequestError(
            (name,),
            f"{name} inflates to {len(out)} bytes{'' if inflater.eof else ' (truncated)'}, "
            f"not the {size} it declares",
            "npz_invalid",
        )
    return out


def read_npy(name: str, data: Member) -> np.ndarray:
    """The `.npy` member `name` as an array of a number type, a view of `data` (read-only when
    `data` is; a copy where its data is not aligned for its dtype): its header is read alone,
    and shape × itemsize must be the size of the data after it (bfloat16 is recognised from
    numpy's descriptor '<V2'; other byte orders are made native)."""
    stream = io.BytesIO(data[:MAX_NPY_HEADER_BYTES])
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f".npy format version {version} is not read (1.0 and 2.0 are)")
    except (ValueError, SyntaxError, TypeError, EOFError, OverflowError, MemoryError) as error:
        raise RequestError((name,), f"not a readable .npy array: {error}", "npy_invalid") from None
    bfloat16 = dtype.kind == "V" and dtype.itemsize == 2 and dtype.names is None
    if not (bfloat16 or dtype.kind in "iu" or dtype.str[1:] in FLOAT_KINDS):
        raise RequestError(
            (name,),
            f"dtype {dtype.str} is not float16, float32, float64, bfloat16 or an integer",
            "npy_dtype",
        )
    if any(not isinstance(length, int) or length < 0 for length in shape):
        raise RequestError(
            (name,), f"the .npy header's shape {shape} is not a shape", "npy_invalid"
        )
    count = math.prod(shape)
    offset = stream.tell()
    if count * dtype.itemsize != len(data) - offset:
        raise RequestError(
            (name,),
            f"the .npy header declares shape {tuple(shape)} of {dtype.str} "
            f"({count * dtype.itemsize} bytes), but the member holds {len(data) - offset} bytes "
            "of data",
            "npy_invalid",
        )
    flat = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    if not flat.flags.aligned:  # numpy's loops would copy it piece by piece on every pass
        flat = flat.copy()
    array = flat.reshape(shape[::-1]).T if fortran_order else flat.reshape(shape)
    if bfloat16:
        return array.view(ml_dtypes.bfloat16)
    return array.astype(array.dtype.newbyteorder("="), copy=False)


def read_json_member(name: str, data: Member) -> dict[str, Any]:
    """The JSON object of member `name`, nested at most MAX_JSON_DEPTH deep."""
    too_deep = False
    try:
        fields = json.loads(bytes(data))
    except (ValueError, UnicodeDecodeError) as error:
        raise RequestError((name,), f"not valid JSON: {error}", "json_invalid") from None
    except RecursionError:
        too_deep = True
    if too_deep or _depth_over(fields, MAX_JSON_DEPTH):
        raise RequestError(
            (name,), f"nested more than {MAX_JSON_DEPTH} levels deep", "json_invalid"
        )
    if not isinstance(fields, dict):
        raise RequestError((name,), "must hold a JSON object", "dict_type")
    return fields


def _depth_over(value: object, limit: int) -> bool:
    """Whether `value` nests lists and objects more than `limit` deep (iteratively)."""
    level: list[object] = [value]
    for _ in range(limit):
        level = [
            child
            for item in level
            if isinstance(item, (list, dict))
            for child in (item.values() if isinstance(item, dict) else item)
        ]
        if not level:
            return False
    return any(isinstance(item, (list, dict)) for item in level)
