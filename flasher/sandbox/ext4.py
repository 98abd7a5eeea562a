"""A minimal, deterministic ext4 writer for the sandbox's synthesized images.

Builds a clean filesystem that `e2fsck -fn` accepts: 4 KiB blocks, 256-byte inodes, block groups
with sparse_super backups, exact block and inode bitmaps (the allocation-map code reads them),
a root directory, lost+found, directories, regular files stored with extents (all-zero blocks
become holes, so large mostly-empty files stay cheap), fast symlinks, and an optional internal
jbd2 journal. Features: filetype, extents, sparse_super, large_file, dir_nlink, extra_isize
(+ has_journal). No metadata checksums, no flex_bg, no htree directories. Everything (UUID,
times, layout) comes from the arguments, so the same input gives the same bytes.
Imports only the standard library and flasher.image.byteio.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from flasher.image.byteio import WriteAt

BLOCK_SIZE = 4096
INODE_SIZE = 256
BLOCKS_PER_GROUP = BLOCK_SIZE * 8
DESC_SIZE = 32
EXTRA_ISIZE = 32
ROOT_INO = 2
JOURNAL_INO = 8
LOST_FOUND_INO = 11
FIRST_INO = 11
MAX_EXTENT_BLOCKS = 32768
MIN_JOURNAL_BLOCKS = 1024

COMPAT_HAS_JOURNAL = 0x0004
INCOMPAT_FILETYPE = 0x0002
INCOMPAT_EXTENTS = 0x0040
RO_COMPAT_SPARSE_SUPER = 0x0001
RO_COMPAT_LARGE_FILE = 0x0002
RO_COMPAT_DIR_NLINK = 0x0020
RO_COMPAT_EXTRA_ISIZE = 0x0040
EXTENTS_FL = 0x80000
S_IFREG, S_IFDIR, S_IFLNK = 0x8000, 0x4000, 0xA000
FT_REG, FT_DIR, FT_SYMLINK = 1, 2, 7
_ZERO_BLOCK = bytes(BLOCK_SIZE)


@dataclass
class _Node:
    kind: str  # "file" | "dir" | "symlink"
    mode: int
    data: bytes = b""
    children: dict[str, _Node] = field(default_factory=dict)
    ino: int = 0
    extents: list[tuple[int, int, int]] = field(default_factory=list)  # (logical, physical, n)
    index_blocks: list[int] = field(default_factory=list)
    size: int = 0


def _has_super(group: int) -> bool:
    if group in (0, 1):
        return True
    for base in (3, 5, 7):
        n = base
        while n < group:
            n *= base
        if n == group:
            return True
    return False


class Ext4Builder:
    """Collect a tree with add_dir/add_file/add_symlink, then `write(io)` the whole filesystem."""

    def __init__(
        self,
        size_bytes: int,
        *,
        label: str,
        uuid: bytes,
        mtime: int,
        inode_ratio_bytes: int = 16384,
        journal_blocks: int = 0,
    ) -> None:
        if len(uuid) != 16:
            raise ValueError("uuid must be 16 bytes")
        if len(label.encode()) > 16:
            raise ValueError(f"ext4 label {label!r} is longer than 16 bytes")
        if journal_blocks and journal_blocks < MIN_JOURNAL_BLOCKS:
            raise ValueError(f"a journal needs at least {MIN_JOURNAL_BLOCKS} blocks")
        self.label = label
        self.uuid = uuid
        self.mtime = mtime
        self.journal_blocks = journal_blocks
        self._root = _Node("dir", 0o755)
        self._root.children["lost+found"] = _Node("dir", 0o700)
        self._geometry(size_bytes // BLOCK_SIZE, inode_ratio_bytes)

    # -- geometry ----------------------------------------------------------------------------

    def _geometry(self, blocks: int, inode_ratio_bytes: int) -> None:
        groups = -(-blocks // BLOCKS_PER_GROUP)
        ipg = 16
        for _ in range(2):  # the table size depends on the inode count and vice versa
            gdt_blocks = -(-groups * DESC_SIZE // BLOCK_SIZE)
            table_blocks = ipg * INODE_SIZE // BLOCK_SIZE
            last = blocks - (groups - 1) * BLOCKS_PER_GROUP
            overhead = (1 + gdt_blocks if _has_super(groups - 1) else 0) + 2 + table_blocks
            if groups > 1 and last < overhead + 64:
                # mke2fs drops a runt last group rather than fill it with metadata
                groups -= 1
                blocks = groups * BLOCKS_PER_GROUP
            wanted = max(blocks * BLOCK_SIZE // inode_ratio_bytes, 64)
            ipg = min(max(16, -(-wanted // groups // 16) * 16), BLOCK_SIZE * 8)
        if blocks < 64:
            raise ValueError(f"an ext4 filesystem needs at least 256 KiB, got {blocks} blocks")
        self.blocks_count = blocks
        self.groups = groups
        self.inodes_per_group = ipg
        self.gdt_blocks = -(-groups * DESC_SIZE // BLOCK_SIZE)
        self.table_blocks = ipg * INODE_SIZE // BLOCK_SIZE

    def _group_layout(self, group: int) -> tuple[int, int, int, int]:
        """(first block, block bitmap, inode bitmap, inode table) of a group."""
        start = group * BLOCKS_PER_GROUP
        meta = start + (1 + self.gdt_blocks if _has_super(group) else 0)
        return start, meta, meta + 1, meta + 2

    def _group_end(self, group: int) -> int:
        return min((group + 1) * BLOCKS_PER_GROUP, self.blocks_count)

    # -- tree --------------------------------------------------------------------------------

    def _parent(self, path: str) -> tuple[_Node, str]:
        parts = [p for p in path.strip("/").split("/") if p]
        if not parts:
            raise ValueError("the root directory already exists")
        node = self._root
        for part in parts[:-1]:
            child = node.children.get(part)
            if child is None:
                child = node.children[part] = _Node("dir", 0o755)
            if child.kind != "dir":
                raise ValueError(f"{path}: {part} is not a directory")
            node = child
        name = parts[-1]
        if len(name.encode()) > 255:
            raise ValueError(f"{path}: name longer than 255 bytes")
        return node, name

    def add_dir(self, path: str, mode: int = 0o755) -> None:
        parent, name = self._parent(path)
        existing = parent.children.get(name)
        if existing is not None and existing.kind != "dir":
            raise ValueError(f"{path} exists and is not a directory")
        if existing is None:
            parent.children[name] = _Node("dir", mode)

    def add_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        parent, name = self._parent(path)
        if name in parent.children:
            raise ValueError(f"{path} already exists")
        parent.children[name] = _Node("file", mode, data=data)

    def add_symlink(self, path: str, target: str) -> None:
        if not 0 < len(target.encode()) < 60:
            raise ValueError(f"{path}: only fast symlinks (1-59 byte targets) are supported")
        parent, name = self._parent(path)
        if name in parent.children:
            raise ValueError(f"{path} already exists")
        parent.children[name] = _Node("symlink", 0o777, data=target.encode())

    # -- allocation --------------------------------------------------------------------------

    def _walk(self) -> list[_Node]:
        order = [self._root]
        for node in order:
            order.extend(node.children[n] for n in sorted(node.children))
        return order

    def _assign_inodes(self, nodes: list[_Node]) -> None:
        next_ino = FIRST_INO + 1
        for node in nodes:
            if node is self._root:
                node.ino = ROOT_INO
            elif node is self._root.children["lost+found"]:
                node.ino = LOST_FOUND_INO
            else:
                node.ino = next_ino
                next_ino += 1
        if next_ino - 1 > self.inodes_per_group * self.groups:
            raise ValueError(f"{next_ino - 1} inodes do not fit in this filesystem")

    def _free_runs(self) -> list[tuple[int, int]]:
        runs = []
        for g in range(self.groups):
            _start, _bb, _ib, table = self._group_layout(g)
            first_free = table + self.table_blocks
            if first_free < self._group_end(g):
                runs.append((first_free, self._group_end(g)))
        return runs

    def _allocate(self, count: int) -> list[tuple[int, int]]:
        """`count` blocks as (first, length) runs, lowest free blocks first."""
        out: list[tuple[int, int]] = []
        while count > 0:
            if not self._runs:
                raise ValueError("the files do not fit in this ext4 filesystem")
            first, end = self._runs[0]
            take = min(count, end - first, MAX_EXTENT_BLOCKS)
            out.append((first, take))
            count -= take
            if first + take == end:
                self._runs.pop(0)
            else:
                self._runs[0] = (first + take, end)
        return out

    def _place(self, node: _Node, content: bytes, *, sparse: bool) -> None:
        """Give `node` extents for `content`; with `sparse`, all-zero blocks become holes."""
        node.size = len(content)
        nblocks = -(-len(content) // BLOCK_SIZE)
        logical = 0
        while logical < nblocks:
            if sparse and self._is_zero(content, logical):
                logical += 1
                continue
            end = logical + 1
            while end < nblocks and not (sparse and self._is_zero(content, end)):
                end += 1
            for first, length in self._allocate(end - logical):
                node.extents.append((logical, first, length))
                self._data[first] = content[logical * BLOCK_SIZE : (logical + length) * BLOCK_SIZE]
                logical += length
        if len(node.extents) > 4:
            leaves = -(-len(node.extents) // ((BLOCK_SIZE - 12) // 12))
            if leaves > 4:
                raise ValueError("file too fragmented for a depth-1 extent tree")
            node.index_blocks = [first for first, _n in self._allocate_each(leaves)]

    def _allocate_each(self, count: int) -> list[tuple[int, int]]:
        return [run for _ in range(count) for run in self._allocate(1)]

    @staticmethod
    def _is_zero(content: bytes, block: int) -> bool:
        chunk = content[block * BLOCK_SIZE : (block + 1) * BLOCK_SIZE]
        return chunk.count(0) == len(chunk)

    def _dir_content(self, node: _Node, parent: _Node) -> bytes:
        entries = [(".", node.ino, FT_DIR), ("..", parent.ino, FT_DIR)]
        kinds = {"file": FT_REG, "dir": FT_DIR, "symlink": FT_SYMLINK}
        entries += [(n, c.ino, kinds[c.kind]) for n, c in sorted(node.children.items())]
        blocks: list[bytes] = []
        current: list[bytes] = []
        used = 0
        for name, ino, ftype in entries:
            raw = name.encode()
            rec_len = (8 + len(raw) + 3) & ~3
            if used + rec_len > BLOCK_SIZE:
                blocks.append(self._close_dir_block(current, used))
                current, used = [], 0
            current.append(struct.pack("<IHBB", ino, rec_len, len(raw), ftype) + raw)
            current[-1] += bytes(rec_len - len(current[-1]))
            used += rec_len
        blocks.append(self._close_dir_block(current, used))
        if node is self._root.children["lost+found"]:
            # mke2fs gives lost+found 16 KiB so e2fsck can reconnect files without allocating
            blocks += [struct.pack("<IH", 0, BLOCK_SIZE) + bytes(BLOCK_SIZE - 6)] * 3
        return b"".join(blocks)

    @staticmethod
    def _close_dir_block(entries: list[bytes], used: int) -> bytes:
        last = entries[-1]
        # the last entry's rec_len stretches to the end of the block
        rec_len = struct.unpack_from("<H", last, 4)[0] + BLOCK_SIZE - used
        entries[-1] = last[:4] + struct.pack("<H", rec_len) + last[6:] + bytes(BLOCK_SIZE - used)
        return b"".join(entries)

    # -- output ------------------------------------------------------------------------------

    def write(self, io: WriteAt) -> None:
        """Write the filesystem at offset 0 of `io` (its size must hold `blocks_count` blocks)."""
        if io.size < self.blocks_count * BLOCK_SIZE:
            raise ValueError("the target is smaller than the filesystem")
        nodes = self._walk()
        self._assign_inodes(nodes)
        self._runs = self._free_runs()
        self._data: dict[int, bytes] = {}
        journal = _Node("file", 0o600)
        if self.journal_blocks:
            empty = bytes((self.journal_blocks - 1) * BLOCK_SIZE)
            self._place(journal, self._journal_superblock() + empty, sparse=False)
        parents = {id(c): n for n in nodes for c in n.children.values()}
        for node in nodes:
            if node.kind == "dir":
                parent = parents.get(id(node), self._root)
                self._place(node, self._dir_content(node, parent), sparse=False)
            elif node.kind == "file":
                self._place(node, node.data, sparse=True)
            else:
                node.size = len(node.data)
        inodes = {n.ino: n for n in nodes}
        if self.journal_blocks:
            journal.ino = JOURNAL_INO
            inodes[JOURNAL_INO] = journal
        for first, chunk in self._data.items():
            io.pwrite(chunk, first * BLOCK_SIZE)
        for node in inodes.values():
            self._write_index(io, node)
        self._write_metadata(io, inodes, journal)

    def _journal_superblock(self) -> bytes:
        header = struct.pack(">III", 0xC03B3998, 4, 0)
        body = struct.pack(">IIIII", BLOCK_SIZE, self.journal_blocks, 1, 1, 0)
        sb = header + body + bytes(16) + self.uuid + struct.pack(">I", 1)
        return sb + bytes(BLOCK_SIZE - len(sb))

    def _write_index(self, io: WriteAt, node: _Node) -> None:
        per_leaf = (BLOCK_SIZE - 12) // 12
        for i, block in enumerate(node.index_blocks):
            chunk = node.extents[i * per_leaf : (i + 1) * per_leaf]
            leaf = struct.pack("<HHHHI", 0xF30A, len(chunk), per_leaf, 0, 0)
            leaf += b"".join(_extent(*e) for e in chunk)
            io.pwrite(leaf + bytes(BLOCK_SIZE - len(leaf)), block * BLOCK_SIZE)

    def _i_block(self, node: _Node) -> bytes:
        if node.kind == "symlink":
            return node.data + bytes(60 - len(node.data))
        if node.index_blocks:
            per_leaf = (BLOCK_SIZE - 12) // 12
            body = struct.pack("<HHHHI", 0xF30A, len(node.index_blocks), 4, 1, 0)
            for i, block in enumerate(node.index_blocks):
                body += struct.pack("<IIHH", node.extents[i * per_leaf][0], block, 0, 0)
        else:
            body = struct.pack("<HHHHI", 0xF30A, len(node.extents), 4, 0, 0)
            body += b"".join(_extent(*e) for e in node.extents)
        return body + bytes(60 - len(body))

    def _inode(self, node: _Node) -> bytes:
        kind = {"file": S_IFREG, "dir": S_IFDIR, "symlink": S_IFLNK}[node.kind]
        links = 2 + sum(c.kind == "dir" for c in node.children.values())
        links = links if node.kind == "dir" else 1
        sectors = (sum(n for _l, _p, n in node.extents) + len(node.index_blocks)) * (
            BLOCK_SIZE // 512
        )
        flags = 0 if node.kind == "symlink" else EXTENTS_FL
        t = self.mtime
        raw = struct.pack(
            "<HHIIIIIHHIII60sIIII12sHHIIIIIII",
            kind | node.mode, 0, node.size & 0xFFFFFFFF, t, t, t, 0, 0, links,
            sectors & 0xFFFFFFFF, flags, 0, self._i_block(node), 0, 0, node.size >> 32, 0,
            struct.pack("<HHHHHH", sectors >> 32, 0, 0, 0, 0, 0), EXTRA_ISIZE, 0, 0, 0, 0, t,
            0, 0, 0,
        )  # fmt: skip
        return raw + bytes(INODE_SIZE - len(raw))

    def _write_metadata(self, io: WriteAt, inodes: dict[int, _Node], journal: _Node) -> None:
        used_blocks = set()
        for node in inodes.values():
            used_blocks.update(node.index_blocks)
            for _logical, first, length in node.extents:
                used_blocks.update(range(first, first + length))
        descriptors = b""
        free_blocks_total = free_inodes_total = 0
        ipg = self.inodes_per_group
        for g in range(self.groups):
            start, bb, ib, table = self._group_layout(g)
            end = self._group_end(g)
            block_bits = bytearray(BLOCK_SIZE)
            used = 0
            for block in range(start, end):
                if block < table + self.table_blocks or block in used_blocks:
                    block_bits[(block - start) >> 3] |= 1 << ((block - start) & 7)
                    used += 1
            for bit in range(end - start, BLOCK_SIZE * 8):
                block_bits[bit >> 3] |= 1 << (bit & 7)
            inode_bits = bytearray(BLOCK_SIZE)
            table_bytes = bytearray(self.table_blocks * BLOCK_SIZE)
            used_inodes = dirs = 0
            for index in range(ipg):
                ino = g * ipg + index + 1
                entry = inodes.get(ino)
                if entry is not None:
                    table_bytes[index * INODE_SIZE : (index + 1) * INODE_SIZE] = self._inode(entry)
                    dirs += entry.kind == "dir"
                if entry is not None or ino < FIRST_INO:
                    inode_bits[index >> 3] |= 1 << (index & 7)
                    used_inodes += 1
            for bit in range(ipg, BLOCK_SIZE * 8):
                inode_bits[bit >> 3] |= 1 << (bit & 7)
            io.pwrite(bytes(block_bits), bb * BLOCK_SIZE)
            io.pwrite(bytes(inode_bits), ib * BLOCK_SIZE)
            io.pwrite(bytes(table_bytes), table * BLOCK_SIZE)
            free_b, free_i = end - start - used, ipg - used_inodes
            free_blocks_total += free_b
            free_inodes_total += free_i
            descriptors += struct.pack(
                "<IIIHHHHIHHHH", bb, ib, table, free_b, free_i, dirs, 0, 0, 0, 0, 0, 0
            )
        gdt = descriptors + bytes(self.gdt_blocks * BLOCK_SIZE - len(descriptors))
        for g in range(self.groups):
            if not _has_super(g):
                continue
            start = g * BLOCKS_PER_GROUP
            sb = self._superblock(g, free_blocks_total, free_inodes_total, journal)
            if g == 0:
                io.pwrite(bytes(1024) + sb + bytes(BLOCK_SIZE - 2048), 0)
            else:
                io.pwrite(sb + bytes(BLOCK_SIZE - 1024), start * BLOCK_SIZE)
            io.pwrite(gdt, (start + 1) * BLOCK_SIZE)

    def _superblock(self, group: int, free_blocks: int, free_inodes: int, journal: _Node) -> bytes:
        t = self.mtime
        compat = COMPAT_HAS_JOURNAL if self.journal_blocks else 0
        incompat = INCOMPAT_FILETYPE | INCOMPAT_EXTENTS
        ro_compat = (
            RO_COMPAT_SPARSE_SUPER
            | RO_COMPAT_LARGE_FILE
            | RO_COMPAT_DIR_NLINK
            | RO_COMPAT_EXTRA_ISIZE
        )
        sb = bytearray(1024)
        struct.pack_into(
            "<IIIIIIIIIIIIIHhHHHHIIIIHHIHHIII",
            sb, 0,
            self.inodes_per_group * self.groups, self.blocks_count, 0, free_blocks, free_inodes,
            0, 2, 2, BLOCKS_PER_GROUP, BLOCKS_PER_GROUP, self.inodes_per_group, 0, t,
            0, -1, 0xEF53, 1, 1, 0, t, 0, 0, 1, 0, 0, FIRST_INO, INODE_SIZE, group,
            compat, incompat, ro_compat,
        )  # fmt: skip
        sb[0x68:0x78] = self.uuid
        sb[0x78:0x88] = self.label.encode().ljust(16, b"\0")
        if self.journal_blocks:
            struct.pack_into("<I", sb, 0xE0, JOURNAL_INO)
            jnl = self._i_block(journal) + struct.pack("<II", journal.size >> 32, journal.size)
            sb[0x10C : 0x10C + 68] = jnl
            sb[0xFD] = 1  # s_jnl_backup_type: the inode's i_block is copied in s_jnl_blocks
        seed = bytes(b ^ 0x5A for b in self.uuid)
        sb[0xEC:0xFC] = seed  # s_hash_seed, derived so it stays deterministic
        sb[0xFC] = 1  # s_def_hash_version: half_md4
        struct.pack_into("<I", sb, 0x108, t)  # s_mkfs_time
        struct.pack_into("<HH", sb, 0x15C, EXTRA_ISIZE, EXTRA_ISIZE)
        struct.pack_into("<I", sb, 0x160, 1)  # s_flags: signed directory hash
        return bytes(sb)


def _extent(logical: int, physical: int, length: int) -> bytes:
    return struct.pack("<IHHI", logical, length, physical >> 32, physical & 0xFFFFFFFF)
