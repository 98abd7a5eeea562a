"""FAT12/16/32 filesystems: the volume (filesystem), its directory entries, its table, mkfs.

`FatFilesystem`, `DirEntry`, `format_fat` and `probe_fat` are the package's public names.
"""

from flasher.image.fat.filesystem import DirEntry, FatFilesystem, format_fat, probe_fat

__all__ = ["DirEntry", "FatFilesystem", "format_fat", "probe_fat"]
