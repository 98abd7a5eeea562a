"""Read-only ext2/3/4 metadata reader: which bytes of the filesystem hold data or metadata.

The answer comes from the filesystem's own superblock, group descriptors and block and inode
bitmaps, with every checksum the filesystem carries verified. Anything this reader cannot vouch
for (unknown features, a journal that still needs replaying, a checksum mismatch, metadata
pointing outside the filesystem) raises ImageError so the caller can fall back to copying the
whole partition.
Imports only the standard library and flasher.errors / flasher.image.{io,ranges}.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from flasher.error_codes import ProblemCode
from flasher.errors import ImageError
from flasher.image import ranges as rng
from flasher.image.byteio import ReadAt

SUPERBLOCK_OFFSET = 1024
SUPERBLOCK_SIZE = 1024
EXT_MAGIC = 0xEF53

# s_feature_compat: only SPARSE_SUPER2 moves metadata; compat bits are safe to ignore by design.
COMPAT_SPARSE_SUPER2 = 0x0200

# s_feature_incompat
INCOMPAT_COMPRESSION = 0x0001
INCOMPAT_FILETYPE = 0x0002
INCOMPAT_RECOVER = 0x0004
INCOMPAT_JOURNAL_DEV = 0x0008
INCOMPAT_META_BG = 0x0010
INCOMPAT_EXTENTS = 0x0040
INCOMPAT_64BIT = 0x0080
INCOMPAT_MMP = 0x0100
INCOMPAT_FLEX_BG = 0x0200
INCOMPAT_EA_INODE = 0x0400
INCOMPAT_DIRDATA = 0x1000
INCOMPAT_CSUM_SEED = 0x2000
INCOMPAT_LARGEDIR = 0x4000
INCOMPAT_INLINE_DATA = 0x8000
INCOMPAT_ENCRYPT = 0x10000
INCOMPAT_CASEFOLD = 0x20000
# Features that change what is stored, not where blocks are or what the bitmaps mean.
INCOMPAT_UNDERSTOOD = (
    INCOMPAT_FILETYPE
    | INCOMPAT_META_BG
    | INCOMPAT_EXTENTS
    | INCOMPAT_64BIT
    | INCOMPAT_MMP
    | INCOMPAT_FLEX_BG
    | INCOMPAT_EA_INODE
    | INCOMPAT_CSUM_SEED
    | INCOMPAT_LARGEDIR
    | INCOMPAT_INLINE_DATA
    | INCOMPAT_ENCRYPT
    | INCOMPAT_CASEFOLD
)

# s_feature_ro_compat
RO_COMPAT_SPARSE_SUPER = 0x0001
RO_COMPAT_GDT_CSUM = 0x0010
RO_COMPAT_BIGALLOC = 0x0200
RO_COMPAT_METADATA_CSUM = 0x0400
# Unknown read-only features may redefine on-disk structures (bigalloc turns bitmap bits into
# clusters, snapshots add an exclude bitmap), so only these are accepted.
RO_COMPAT_UNDERSTOOD = (
    RO_COMPAT_SPARSE_SUPER
    | 0x0002  # LARGE_FILE
    | 0x0004  # BTREE_DIR
    | 0x0008  # HUGE_FILE
    | RO_COMPAT_GDT_CSUM
    | 0x0020  # DIR_NLINK
    | 0x0040  # EXTRA_ISIZE
    | 0x0100  # QUOTA
    | RO_COMPAT_METADATA_CSUM
    | 0x1000  # READONLY
    | 0x2000  # PROJECT
    | 0x4000  # SHARED_BLOCKS
    | 0x8000  # VERITY
    | 0x10000  # ORPHAN_PRESENT
)

STATE_VALID = 0x0001
STATE_ERROR = 0x0002

BG_INODE_UNINIT = 0x0001
BG_BLOCK_UNINIT = 0x0002
BG_INODE_ZEROED = 0x0004
DESC_CHECKSUM_OFFSET = 0x1E
# Descriptors shorter than these ends carry only the low 16 bits of a bitmap checksum.
BITMAP_CSUM_HI_END = 0x3A
INODE_BITMAP_CSUM_HI_END = 0x3C


def _crc_table(poly: int) -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC32C_TABLE = _crc_table(0x82F63B78)
_CRC16_TABLE = _crc_table(0xA001)


def crc32c(crc: int, data: bytes) -> int:
    """CRC-32C (Castagnoli) continued from `crc`, without the final inversion, as ext4 uses it."""
    table = _CRC32C_TABLE
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc


def crc16(crc: int, data: bytes) -> int:
    """CRC-16/ARC continued from `crc` (the GDT_CSUM group descriptor checksum)."""
    table = _CRC16_TABLE
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc


@dataclass(frozen=True)
class GroupDescriptor:
    block_bitmap: int
    inode_bitmap: int
    inode_table: int
    free_blocks: int
    free_inodes: int
    flags: int
    block_bitmap_csum: int
    inode_bitmap_csum: int
    itable_unused: int


class Ext4Filesystem:
    """The superblock and group descriptors of one ext2/3/4 filesystem, checked on open."""

    def __init__(self, io: ReadAt, *, name: str = "ext4 filesystem") -> None:
        self._io = io
        self.name = name
        sb = io.pread(SUPERBLOCK_SIZE, SUPERBLOCK_OFFSET)
        if len(sb) < SUPERBLOCK_SIZE or int.from_bytes(sb[0x38:0x3A], "little") != EXT_MAGIC:
            self._fail("no ext2/3/4 superblock", ProblemCode.NOT_EXT4)
        self._parse_superblock(sb)
        self.descriptors = self._read_descriptors()
        self._check_pointers()

    def _fail(self, message: str, problem: ProblemCode = ProblemCode.CORRUPT_FILESYSTEM) -> None:
        raise ImageError(self.name, message, problem=problem)

    def _parse_superblock(self, sb: bytes) -> None:
        def u32(offset: int) -> int:
            return int.from_bytes(sb[offset : offset + 4], "little")

        def u16(offset: int) -> int:
            return int.from_bytes(sb[offset : offset + 2], "little")

        rev_level = u32(0x4C)
        self.compat = u32(0x5C) if rev_level else 0
        self.incompat = u32(0x60) if rev_level else 0
        self.ro_compat = u32(0x64) if rev_level else 0
        unknown = self.incompat & ~INCOMPAT_UNDERSTOOD
        if self.incompat & INCOMPAT_RECOVER:
            self._fail(
                "the journal needs recovery, so the bitmaps may be stale",
                ProblemCode.NEEDS_RECOVERY,
            )
        if self.incompat & INCOMPAT_JOURNAL_DEV:
            self._fail(
                "this is an external journal device, not a filesystem", ProblemCode.UNSUPPORTED
            )
        if unknown:
            self._fail(f"unsupported incompatible features 0x{unknown:x}", ProblemCode.UNSUPPORTED)
        unknown = self.ro_compat & ~RO_COMPAT_UNDERSTOOD
        if unknown:
            self._fail(f"unsupported read-only features 0x{unknown:x}", ProblemCode.UNSUPPORTED)
        self.metadata_csum = bool(self.ro_compat & RO_COMPAT_METADATA_CSUM)
        if self.metadata_csum:
            if sb[0x175] != 1:
                self._fail(f"unknown superblock checksum type {sb[0x175]}")
            if crc32c(0xFFFFFFFF, sb[:0x3FC]) != u32(0x3FC):
                self._fail("superblock checksum mismatch")
        self.group_csum = self.metadata_csum or bool(self.ro_compat & RO_COMPAT_GDT_CSUM)
        state = u16(0x3A)
        if state & STATE_ERROR:
            self._fail("the filesystem is marked as having errors")
        if not state & STATE_VALID:
            self._fail("the filesystem was not cleanly unmounted")

        log_block = u32(0x18)
        if log_block > 6:
            self._fail(f"invalid block size exponent {log_block}")
        self.block_size = 1024 << log_block
        self.blocks_count = u32(0x04)
        if self.incompat & INCOMPAT_64BIT:
            self.blocks_count |= u32(0x150) << 32
            self.desc_size = u16(0xFE)
            if not 64 <= self.desc_size <= 1024 or self.desc_size & (self.desc_size - 1):
                self._fail(f"invalid group descriptor size {self.desc_size}")
        else:
            self.desc_size = 32
        self.first_data_block = u32(0x14)
        self.blocks_per_group = u32(0x20)
        self.inodes_per_group = u32(0x28)
        self.inode_size = u16(0x58) if rev_level else 128
        self.reserved_gdt_blocks = u16(0xCE)
        self.first_meta_bg = u32(0x104)
        self.mmp_block = int.from_bytes(sb[0x168:0x170], "little")
        self.backup_groups = (u32(0x24C), u32(0x250))
        self.uuid = sb[0x68:0x78]
        if self.incompat & INCOMPAT_CSUM_SEED:
            self.csum_seed = u32(0x270)
        else:
            self.csum_seed = crc32c(0xFFFFFFFF, self.uuid)

        if self.first_data_block != (1 if self.block_size == 1024 else 0):
            self._fail(f"first data block {self.first_data_block} does not fit the block size")
        if not 0 < self.blocks_per_group <= 8 * self.block_size or self.blocks_per_group % 8:
            self._fail(f"invalid blocks per group {self.blocks_per_group}")
        if self.inode_size < 128 or self.inode_size & (self.inode_size - 1):
            self._fail(f"invalid inode size {self.inode_size}")
        inode_bits = 8 * self.block_size
        if self.inode_size > self.block_size or not 0 < self.inodes_per_group <= inode_bits:
            self._fail("invalid inode geometry")
        if self.blocks_count <= self.first_data_block:
            self._fail(f"invalid block count {self.blocks_count}")
        if self.size_bytes > self._io.size:
            self._fail(
                f"the filesystem ({self.size_bytes} bytes) is larger than its partition "
                f"({self._io.size} bytes)",
                ProblemCode.TRUNCATED,
            )
        self.group_count = -(-(self.blocks_count - self.first_data_block) // self.blocks_per_group)
        self.descs_per_block = self.block_size // self.desc_size
        self.desc_blocks = -(-self.group_count // self.descs_per_block)
        self.inode_table_blocks = -(-self.inodes_per_group * self.inode_size // self.block_size)

    @property
    def size_bytes(self) -> int:
        return self.blocks_count * self.block_size

    @property
    def meta_bg(self) -> bool:
        return bool(self.incompat & INCOMPAT_META_BG)

    def group_first_block(self, group: int) -> int:
        return self.first_data_block + group * self.blocks_per_group

    def group_block_count(self, group: int) -> int:
        return min(self.blocks_per_group, self.blocks_count - self.group_first_block(group))

    def has_superblock_backup(self, group: int) -> bool:
        """Whether `group` starts with a superblock copy (sparse_super / sparse_super2 rules)."""
        if group == 0:
            return True
        if self.compat & COMPAT_SPARSE_SUPER2:
            return group in self.backup_groups
        if group == 1 or not self.ro_compat & RO_COMPAT_SPARSE_SUPER:
            return True
        if group % 2 == 0:
            return False
        for base in (3, 5, 7):
            power = base
            while power < group:
                power *= base
            if power == group:
                return True
        return False

    def _in_meta_bg(self, group: int) -> bool:
        return self.meta_bg and group // self.descs_per_block >= self.first_meta_bg

    def base_metadata(self, group: int) -> list[rng.Range]:
        """Block ranges of the superblock copy and descriptor blocks at the start of `group`."""
        first = self.group_first_block(group)
        has_super = self.has_superblock_backup(group)
        out = [(first, 1)] if has_super else []
        if self._in_meta_bg(group):
            if group % self.descs_per_block in (0, 1, self.descs_per_block - 1):
                out.append((first + int(has_super), 1))
        elif has_super:
            # e2fsprogs counts only s_first_meta_bg old descriptor blocks under meta_bg, the
            # kernel counts them all plus the reserved ones: keep the larger set.
            count = self.desc_blocks + self.reserved_gdt_blocks
            out.append((first + 1, min(count, self.group_block_count(group) - 1)))
        return out

    def _descriptor_block(self, index: int) -> int:
        if not self.meta_bg or index < self.first_meta_bg:
            return self.first_data_block + 1 + index
        group = index * self.descs_per_block
        return self.group_first_block(group) + int(self.has_superblock_backup(group))

    def _read_block(self, block: int) -> bytes:
        data = self._io.pread(self.block_size, block * self.block_size)
        if len(data) != self.block_size:
            self._fail(f"block {block} is past the end of the partition", ProblemCode.TRUNCATED)
        return data

    def _read_descriptors(self) -> tuple[GroupDescriptor, ...]:
        if self.meta_bg and self.first_meta_bg > self.desc_blocks:
            self._fail(f"invalid first meta block group {self.first_meta_bg}")
        table = b"".join(
            self._read_block(self._descriptor_block(i)) for i in range(self.desc_blocks)
        )
        wide = self.desc_size >= 64
        out = []
        for group in range(self.group_count):
            raw = table[group * self.desc_size : (group + 1) * self.desc_size]
            self._check_descriptor(group, raw)
            lo = struct.unpack_from("<IIIHHHHIHHHH", raw)
            # The high halves of the same fields, in the same order, in 64-byte descriptors.
            hi = struct.unpack_from("<IIIHHHHIHH", raw, 0x20) if wide else (0,) * 10
            out.append(
                GroupDescriptor(
                    block_bitmap=lo[0] | hi[0] << 32,
                    inode_bitmap=lo[1] | hi[1] << 32,
                    inode_table=lo[2] | hi[2] << 32,
                    free_blocks=lo[3] | hi[3] << 16,
                    free_inodes=lo[4] | hi[4] << 16,
                    # Flags and itable_unused mean something only under descriptor checksums;
                    # the kernel and e2fsck ignore them otherwise.
                    flags=lo[6] if self.group_csum else 0,
                    block_bitmap_csum=lo[8] | hi[8] << 16,
                    inode_bitmap_csum=lo[9] | hi[9] << 16,
                    itable_unused=lo[10] | hi[6] << 16 if self.group_csum else 0,
                )
            )
        return tuple(out)

    def _check_descriptor(self, group: int, raw: bytes) -> None:
        if not self.group_csum:
            return
        number = struct.pack("<I", group)
        head, tail = raw[:DESC_CHECKSUM_OFFSET], raw[DESC_CHECKSUM_OFFSET + 2 :]
        stored = raw[DESC_CHECKSUM_OFFSET : DESC_CHECKSUM_OFFSET + 2]
        if self.metadata_csum:
            # metadata_csum covers the descriptor with its checksum field zeroed; the older
            # GDT_CSUM skips the field instead.
            zeroed = head + b"\0\0" + tail
            expected = crc32c(crc32c(self.csum_seed, number), zeroed) & 0xFFFF
        else:
            expected = crc16(crc16(crc16(0xFFFF, self.uuid), number + head), tail)
        if expected != int.from_bytes(stored, "little"):
            self._fail(f"group descriptor {group} checksum mismatch")

    def _check_pointers(self) -> None:
        pointed = [(desc.inode_table, self.inode_table_blocks) for desc in self.descriptors]
        pointed += [
            (block, 1)
            for desc in self.descriptors
            for block in (desc.block_bitmap, desc.inode_bitmap)
        ]
        if self.incompat & INCOMPAT_MMP:
            pointed.append((self.mmp_block, 1))
        for start, count in pointed:
            if start < self.first_data_block or start + count > self.blocks_count:
                self._fail(f"metadata blocks {start}+{count} lie outside the filesystem")

    def _metadata_blocks(self, table_blocks: list[int]) -> list[rng.Range]:
        """Every group's superblock/descriptor copies, bitmaps and the first
        `table_blocks[group]` blocks of its inode table."""
        blocks: list[rng.Range] = [(0, self.first_data_block)]
        for group, desc in enumerate(self.descriptors):
            blocks += [
                (desc.block_bitmap, 1),
                (desc.inode_bitmap, 1),
                (desc.inode_table, table_blocks[group]),
                *self.base_metadata(group),
            ]
        if self.incompat & INCOMPAT_MMP:
            blocks.append((self.mmp_block, 1))
        return blocks

    def used_blocks(self) -> list[rng.Range]:
        """Merged block ranges in use: the bitmaps of initialised groups plus all metadata.

        A group flagged BLOCK_UNINIT (trusted only when descriptors are checksummed, as the
        kernel does) has no bitmap on disk; its used blocks are exactly the metadata, which is
        computed from every descriptor because flex_bg places other groups' tables there.
        """
        blocks = self._metadata_blocks([self.inode_table_blocks] * self.group_count)
        bitmap_bytes = self.blocks_per_group // 8
        for group, desc in enumerate(self.descriptors):
            if desc.flags & BG_BLOCK_UNINIT:
                continue
            bitmap = self._read_block(desc.block_bitmap)
            if self.metadata_csum:
                mask = 0xFFFFFFFF if self.desc_size >= BITMAP_CSUM_HI_END else 0xFFFF
                if crc32c(self.csum_seed, bitmap[:bitmap_bytes]) & mask != desc.block_bitmap_csum:
                    self._fail(f"block bitmap of group {group} checksum mismatch")
            count = self.group_block_count(group)
            value = int.from_bytes(bitmap[:bitmap_bytes], "little") & ((1 << count) - 1)
            if count - value.bit_count() != desc.free_blocks:
                self._fail(f"block bitmap of group {group} disagrees with its free block count")
            first = self.group_first_block(group)
            blocks += [(first + start, length) for start, length in rng.set_bit_runs(bitmap, count)]
        return rng.merge(blocks)

    def inode_table_blocks_in_use(self) -> list[int]:
        """Per group, how many leading blocks of its inode table can hold an inode in use.

        With descriptor checksums on, the kernel and e2fsck never read an inode past
        inodes_per_group - itable_unused (none at all under INODE_UNINIT): e2fsck's inode scan
        stops there, the kernel bounds its inode-table readahead there and builds the block of
        a newly allocated inode in memory when no other inode in it is in use. INODE_ZEROED
        says the rest holds zeros (mkfs sets it only when it zeroed the table or its discard
        left zeros, the kernel's lazy init only after writing zeros), so leaving the rest out
        drops nothing but zeros. Anything less certain keeps the whole table: no checksums
        (everyone then ignores the flags and itable_unused), no ZEROED flag, an itable_unused
        e2fsck would reset (above the free inode count), or an inode past the boundary marked
        in use in the inode bitmap.
        """
        whole = self.inode_table_blocks
        ipg = self.inodes_per_group
        out = []
        for group, desc in enumerate(self.descriptors):
            unused = desc.itable_unused
            if not desc.flags & BG_INODE_ZEROED or unused > min(desc.free_inodes, ipg):
                out.append(whole)
            elif desc.flags & BG_INODE_UNINIT:
                out.append(0)
            elif self._inode_bitmap(group) >> (ipg - unused):
                out.append(whole)
            else:
                out.append(-(-(ipg - unused) * self.inode_size // self.block_size))
        return out

    def _inode_bitmap(self, group: int) -> int:
        """The group's inode bitmap as an integer (bit n = inode n of the group in use)."""
        desc = self.descriptors[group]
        bitmap = self._read_block(desc.inode_bitmap)[: -(-self.inodes_per_group // 8)]
        if self.metadata_csum:
            mask = 0xFFFFFFFF if self.desc_size >= INODE_BITMAP_CSUM_HI_END else 0xFFFF
            covered = bitmap[: self.inodes_per_group // 8]
            if crc32c(self.csum_seed, covered) & mask != desc.inode_bitmap_csum:
                self._fail(f"inode bitmap of group {group} checksum mismatch")
        return int.from_bytes(bitmap, "little") & ((1 << self.inodes_per_group) - 1)

    def inode_table_tails(self) -> list[rng.Range]:
        """Merged block ranges at the ends of inode tables that hold no inode in use and are
        known to be zero (see inode_table_blocks_in_use); empty without descriptor checksums."""
        return self._tails(self.inode_table_blocks_in_use())

    def _tails(self, in_use: list[int]) -> list[rng.Range]:
        return rng.merge(
            (desc.inode_table + count, self.inode_table_blocks - count)
            for desc, count in zip(self.descriptors, in_use, strict=True)
        )

    def mapped_blocks(self) -> list[rng.Range]:
        """Merged block ranges a copy must carry: the used blocks without the inode table tails.

        The block bitmap marks the tails in use, so they are cut out of the used blocks; every
        other piece of metadata is then added back in case a damaged layout overlaps a tail.

        Kept although zero in a freshly made image, because something may read them before
        writing them:
        - The journal body, here; the allocation map then takes the body of a clean journal
          out again as scrub ranges (flasher.image.ext4journal). After a crash, jbd2 replays
          from the journal superblock's tail and stops at the first block whose magic or
          sequence number does not follow. On a card that held this same image before (same UUID,
          hence the same checksum seed, and the same starting sequence number), the previous
          life's log may still be there, and a stale transaction with the next sequence
          number would pass every check and be replayed over newer metadata. jbd2 takes only
          blocks starting with its magic for log blocks (it escapes data blocks that would),
          so instead of writing the body the writer reads the scrub ranges back from the card
          and zeroes each block holding the magic (flasher.writer.scrub). The journal
          superblock stays mapped, and so does the whole journal when it needs recovery or
          its inode, extents or superblock are not as expected.
        - Bitmaps of BLOCK_UNINIT/INODE_UNINIT groups and the backup copies of the reserved
          GDT blocks: the kernel and e2fsck build uninitialised bitmaps in memory and never
          read the backups, but together they are a few hundred KiB per filesystem and sit
          next to metadata that is written anyway, so a write plan would fill the gaps back in.
        """
        in_use = self.inode_table_blocks_in_use()
        end = self.blocks_count
        free_or_tail = [*rng.complement(self.used_blocks(), 0, end), *self._tails(in_use)]
        kept = rng.complement(free_or_tail, 0, end)
        return rng.merge([*kept, *self._metadata_blocks(in_use)])

    def allocated_ranges(self) -> list[rng.Range]:
        """Byte ranges (relative to the partition) that must be copied for the filesystem to be
        intact: mapped blocks, plus any bytes of the partition after the filesystem's last
        block."""
        size = self.block_size
        out = [(start * size, count * size) for start, count in self.mapped_blocks()]
        if self._io.size > self.size_bytes:
            out.append((self.size_bytes, self._io.size - self.size_bytes))
        return rng.merge(out)
