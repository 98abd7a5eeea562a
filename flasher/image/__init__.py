"""Image engine: sources, partition tables, FAT, keyfiles, overlay configuration, allocation map."""
