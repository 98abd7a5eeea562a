"""The internal jbd2 journal of an ext3/4 filesystem: where it lies, and what may be scrubbed.

jbd2 reads a journal's body only to replay it, and only when its superblock says there is
something to replay (s_start set). The body of a clean journal is never read before it is
written again, so what the image holds there (zeros, or the log of the session that built it)
means nothing and need not be read nor copied: a card only has to hold no block there that jbd2
could take for a log block of a previous life (flasher.writer.scrub makes sure of that on the
card). `body_ranges` finds that body from the journal inode's extent tree, cross-checked with
the superblock's backup of that inode's block map and with the journal's own superblock,
without reading the body. Anything unexpected (no extents, a hole, an uninitialised extent, a
journal needing recovery, fast commits, a size mismatch) gives no ranges: the caller then keeps
the whole journal mapped, as before.

Imports only the standard library, flasher.errors and flasher.image.{byteio,ext4,ranges}.
"""

from __future__ import annotations

import struct

from flasher.errors import ImageError
from flasher.image import ranges as rng
from flasher.image.byteio import ReadAt
from flasher.image.ext4 import SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE, Ext4Filesystem

JBD2_MAGIC = 0xC03B3998
JBD2_MAGIC_BYTES = JBD2_MAGIC.to_bytes(4, "big")
COMPAT_HAS_JOURNAL = 0x0004
JNL_BACKUP_BLOCKS = 1  # s_jnl_backup_type: s_jnl_blocks holds the journal inode's i_block
INODE_EXTENTS_FL = 0x00080000
S_IFMT, S_IFREG = 0xF000, 0x8000
EXTENT_MAGIC = 0xF30A
MAX_EXTENT_DEPTH = 5
MAX_INIT_EXTENT_LEN = 32768  # longer ee_len values mark uninitialised extents
JSB_V1, JSB_V2 = 3, 4  # jbd2 superblock block types
JBD2_INCOMPAT_FAST_COMMIT = 0x20


class _Unsupported(Exception):
    """Something about this journal is not what the scrub relies on: keep it mapped."""


def body_ranges(fs: Ext4Filesystem, io: ReadAt) -> list[rng.Range]:
    """Byte ranges (relative to the filesystem) of a clean journal's body.

    The body is every journal block after its superblock (logical block 0, never included).
    Empty when the filesystem has no internal journal or it cannot be vouched for.
    """
    if not fs.compat & COMPAT_HAS_JOURNAL:
        return []
    try:
        blocks = _journal_blocks(fs, io)
    except (_Unsupported, ImageError, struct.error, IndexError):
        return []
    size = fs.block_size
    body: list[rng.Range] = []
    logical = 0
    for physical, count in blocks:
        skip = 1 if logical == 0 else 0
        if count > skip:
            body.append(((physical + skip) * size, (count - skip) * size))
        logical += count
    return rng.merge(body)  # inside the filesystem, which Ext4Filesystem found inside `io`


def _u32(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 4], "little")


def _journal_blocks(fs: Ext4Filesystem, io: ReadAt) -> list[rng.Range]:
    """The journal's physical block runs in logical order, from its inode, checked."""
    sb = io.pread(SUPERBLOCK_SIZE, SUPERBLOCK_OFFSET)
    inum = _u32(sb, 0xE0)
    if inum == 0 or inum > fs.inodes_per_group * fs.group_count:
        raise _Unsupported("no internal journal inode")
    group, index = divmod(inum - 1, fs.inodes_per_group)
    table = fs.descriptors[group].inode_table
    inode = io.pread(min(fs.inode_size, 256), table * fs.block_size + index * fs.inode_size)
    if len(inode) < 128 or int.from_bytes(inode[0:2], "little") & S_IFMT != S_IFREG:
        raise _Unsupported("the journal inode is not a regular file")
    if not _u32(inode, 0x20) & INODE_EXTENTS_FL:
        raise _Unsupported("the journal is block-mapped, not extent-mapped")
    i_block = inode[0x28:0x64]
    size_bytes = _u32(inode, 0x04) | _u32(inode, 0x6C) << 32
    if sb[0xFD] == JNL_BACKUP_BLOCKS:
        backup = sb[0x10C : 0x10C + 17 * 4]
        if backup[:60] != i_block or struct.unpack_from("<II", backup, 60) != (
            _u32(inode, 0x6C),
            _u32(inode, 0x04),
        ):
            raise _Unsupported("the journal inode disagrees with its superblock backup")
    runs = _extents(fs, io, i_block, None)
    runs.sort()
    blocks: list[rng.Range] = []
    expected = 0
    for logical, physical, count in runs:
        if logical != expected:
            raise _Unsupported("the journal has a hole")
        if physical < fs.first_data_block or physical + count > fs.blocks_count:
            raise _Unsupported("the journal lies outside the filesystem")
        blocks.append((physical, count))
        expected += count
    if not blocks or expected * fs.block_size != size_bytes:
        raise _Unsupported("the journal's extents do not add up to its size")
    _check_journal_superblock(fs, io, blocks[0][0], expected)
    return blocks


def _extents(
    fs: Ext4Filesystem, io: ReadAt, node: bytes, depth: int | None
) -> list[tuple[int, int, int]]:
    """(logical, physical, count) of every extent under an extent tree node."""
    magic, entries, capacity, node_depth = struct.unpack_from("<HHHH", node)
    if magic != EXTENT_MAGIC or entries > capacity or 12 + 12 * entries > len(node):
        raise _Unsupported("bad extent header")
    if node_depth > MAX_EXTENT_DEPTH or (depth is not None and node_depth != depth):
        raise _Unsupported("bad extent tree depth")
    out: list[tuple[int, int, int]] = []
    for i in range(entries):
        first, a, b, c = struct.unpack_from("<IHHI", node, 12 + 12 * i)
        if node_depth == 0:
            length, start_hi, start_lo = a, b, c
            if not 0 < length <= MAX_INIT_EXTENT_LEN:
                raise _Unsupported("an uninitialised or empty extent")
            out.append((first, start_lo | start_hi << 32, length))
            continue
        leaf = _index_leaf(node, 12 + 12 * i)
        if not fs.first_data_block <= leaf < fs.blocks_count:
            raise _Unsupported("an extent index points outside the filesystem")
        child = io.pread(fs.block_size, leaf * fs.block_size)
        if len(child) != fs.block_size:
            raise _Unsupported("an extent block is past the end")
        out += _extents(fs, io, child, node_depth - 1)
    return out


def _index_leaf(node: bytes, offset: int) -> int:
    """The block an ext4_extent_idx at `offset` points to (ei_leaf_lo, then ei_leaf_hi)."""
    _first, lo, hi = struct.unpack_from("<IIH", node, offset)
    return int(lo | hi << 32)


def _check_journal_superblock(fs: Ext4Filesystem, io: ReadAt, block: int, blocks: int) -> None:
    jsb = io.pread(0x30, block * fs.block_size)
    magic, blocktype = struct.unpack_from(">II", jsb)
    if magic != JBD2_MAGIC or blocktype not in (JSB_V1, JSB_V2):
        raise _Unsupported("no jbd2 superblock at the journal's start")
    block_size, max_len, first, _sequence, start = struct.unpack_from(">IIIII", jsb, 0x0C)
    if block_size != fs.block_size or not 1 <= first < max_len <= blocks:
        raise _Unsupported("the jbd2 superblock does not fit the journal inode")
    if start != 0:
        raise _Unsupported("the journal holds transactions to replay")
    if blocktype == JSB_V2 and struct.unpack_from(">I", jsb, 0x28)[0] & JBD2_INCOMPAT_FAST_COMMIT:
        raise _Unsupported("fast commits keep their own area")
