// Inode flags: chattr/lsattr's FS_*_FL flags and xfs-style FS_XFLAG_* flags mapped onto the
// INODE_ITEM's BTRFS_INODE_* flags, the rules for changing them, inheritance by new inodes, and the
// checks that enforce immutable and append-only (btrfs ioctl.c btrfs_inode_flags_to_fsflags /
// check_fsflags / btrfs_fileattr_get / btrfs_fileattr_set, inode.c btrfs_inherit_iflags, and the
// VFS checks fs/file_attr.c, fs/namei.c may_delete / may_create / may_open, fs/attr.c
// may_setattr, fs/xattr.c xattr_permission, fs/open.c vfs_fallocate / do_truncate).
//
// Storage: the low 32 bits of INODE_ITEM.flags (FORMAT.md §3.3), exactly the kernel's bits, so
// lsattr shows the same flags whichever driver mounts the image. A change is one inode update
// (a delayed item, committed like any other), plus the "btrfs.compression" property xattr that
// the kernel sets with +c and removes with any other SETFLAGS.
//
// Enforcement lives in the daemon's filesystem, not in the kernel: a FUSE inode's i_flags never
// carry S_IMMUTABLE / S_APPEND, so every VFS check that reads IS_IMMUTABLE / IS_APPEND passes in the
// kernel and the operation reaches us. The check_* helpers below answer as those VFS checks would
// (EPERM); the operations in filesystem_ns.cpp / filesystem_data.cpp call them under the inode
// locks they already hold, before any tree change.
//
// Privileges: changing IMMUTABLE or APPEND needs CAP_LINUX_IMMUTABLE, changing any flag needs
// ownership or CAP_FOWNER (vfs_fileattr_set). The kernel checks both before it asks the daemon;
// the filesystem checks them again from Caller::cap_* (the daemon fills them from the caller's
// effective capabilities), so the rule holds for any caller of this API.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "io/status.h"
#include "tree/format.h"

namespace ubtrfs::fs {

// FS_*_FL (linux/fs.h), the chattr letters in the comments.
inline constexpr uint32_t kFsComprFl = 0x00000004;      // c
inline constexpr uint32_t kFsSyncFl = 0x00000008;       // S
inline constexpr uint32_t kFsImmutableFl = 0x00000010;  // i
inline constexpr uint32_t kFsAppendFl = 0x00000020;     // a
inline constexpr uint32_t kFsNodumpFl = 0x00000040;     // d
inline constexpr uint32_t kFsNoatimeFl = 0x00000080;    // A
inline constexpr uint32_t kFsNocompFl = 0x00000400;     // m
inline constexpr uint32_t kFsDirsyncFl = 0x00010000;    // D
inline constexpr uint32_t kFsVerityFl = 0x00100000;     // V
inline constexpr uint32_t kFsNocowFl = 0x00800000;      // C
inline constexpr uint32_t kFsDaxFl = 0x02000000;
inline constexpr uint32_t kFsProjinheritFl = 0x20000000;
// FS_COMMON_FL: the flags FS_IOC_FSSETXATTR can express (linux/fileattr.h).
inline constexpr uint32_t kFsCommonFl =
    kFsSyncFl | kFsImmutableFl | kFsAppendFl | kFsNodumpFl | kFsNoatimeFl | kFsDaxFl | kFsProjinheritFl;

// FS_XFLAG_* (linux/fs.h).
inline constexpr uint32_t kXflagImmutable = 0x00000008;
inline constexpr uint32_t kXflagAppend = 0x00000010;
inline constexpr uint32_t kXflagSync = 0x00000020;
inline constexpr uint32_t kXflagNoatime = 0x00000040;
inline constexpr uint32_t kXflagNodump = 0x00000080;
inline constexpr uint32_t kXflagProjinherit = 0x00000200;
inline constexpr uint32_t kXflagExtsize = 0x00000800;
inline constexpr uint32_t kXflagExtszinherit = 0x00001000;
inline constexpr uint32_t kXflagDax = 0x00008000;
inline constexpr uint32_t kXflagCowextsize = 0x00010000;
inline constexpr uint32_t kXflagVerity = 0x00020000;
// FS_XFLAG_COMMON (linux/fileattr.h).
inline constexpr uint32_t kXflagCommon =
    kXflagSync | kXflagImmutable | kXflagAppend | kXflagNodump | kXflagNoatime | kXflagDax | kXflagProjinherit;

// struct fsxattr (FS_IOC_FSGETXATTR / FS_IOC_FSSETXATTR), without its padding.
struct FsXattr {
  uint32_t xflags = 0;
  uint32_t extsize = 0;
  uint32_t nextents = 0;
  uint32_t projid = 0;
  uint32_t cowextsize = 0;
  bool operator==(const FsXattr&) const = default;
};

// The property the kernel stores with +c (props.c "btrfs.compression"), and its value: the mount's
// compression type (Filesystem::change_flags substitutes it), zlib when it has none.
inline constexpr std::string_view kCompressionProp = "btrfs.compression";
inline constexpr std::string_view kDefaultCompressionProp = "zlib";

// btrfs_inode_flags_to_fsflags: what FS_IOC_GETFLAGS returns for INODE_ITEM.flags.
uint32_t inode_flags_to_fsflags(uint64_t inode_flags);
// fileattr_fill_flags / fileattr_fill_xflags: the translation between the two flag words.
uint32_t fsflags_to_xflags(uint32_t fsflags);
uint32_t xflags_to_fsflags(uint32_t xflags);
// btrfs_fileattr_get through FS_IOC_FSGETXATTR: the common xflags, everything else zero.
FsXattr inode_flags_to_fsxattr(uint64_t inode_flags);

// btrfs_mask_fsflags_for_type: directories keep every flag, regular files all but DIRSYNC,
// other inodes only NODUMP and NOATIME.
uint32_t mask_fsflags_for_type(uint32_t mode, uint32_t fsflags);
// check_fsflags: EOPNOTSUPP for a flag btrfs does not support, EINVAL for NOCOMP with COMPR,
// COMPR with NOCOW, or NOCOW and a compression flag across the old and new flags.
[[nodiscard]] Status check_fsflags(uint32_t old_fsflags, uint32_t fsflags);

// The outcome of a change (btrfs_fileattr_set): the new INODE_ITEM.flags and what becomes of the
// compression property (nullopt: left alone; "" removed; else set to that value).
struct FlagChange {
  uint64_t flags = 0;
  std::optional<std::string> compression_prop;
};
// btrfs_fileattr_set's flag arithmetic for an inode of `mode` and `size` whose flags are
// `old_flags`: `fsflags` as FS_IOC_SETFLAGS gives them, or (from_fsxattr) as FS_IOC_FSSETXATTR
// gives them, where only the five common flags change. +C on a regular file takes effect only while
// it is empty (and brings NODATASUM); -C likewise, so a non-empty file silently keeps its state.
// REQUIRES: check_fsflags passed for the masked flags.
FlagChange apply_fsflags(uint32_t mode, uint64_t size, uint64_t old_flags, uint32_t fsflags, bool from_fsxattr);

// FS_IOC_FSSETXATTR's fsxattr turned into the FS_*_FL word btrfs_fileattr_set sees
// (vfs_fileattr_set keeps the old non-common flags), or EOPNOTSUPP for what btrfs cannot store
// (fileattr_has_fsx: an xflag outside the common ones, a non-zero extent size, project id or CoW
// extent size).
[[nodiscard]] Result<uint32_t> fsxattr_to_fsflags(const FsXattr& x, uint32_t old_fsflags);

// btrfs_inherit_iflags: the flags a new inode of `mode` takes from its directory's flags
// (NOCOMPRESS or COMPRESS; NODATACOW, with NODATASUM for a regular file).
uint64_t inherit_flags(uint64_t dir_flags, uint32_t mode);

// ---- enforcement (EPERM, as the VFS checks named) ----------------------------------------------
inline bool is_immutable(const InodeItem& ii) { return ii.flags.get() & kInodeImmutable; }
inline bool is_append(const InodeItem& ii) { return ii.flags.get() & kInodeAppend; }
// may_create (inode_permission MAY_WRITE on the directory): no new entry in an immutable directory.
[[nodiscard]] Status check_may_create(const InodeItem& dir, uint64_t dir_objectid);
// may_delete: not from an immutable or append-only directory, nor an immutable or append-only victim.
[[nodiscard]] Status check_may_delete(const InodeItem& dir, uint64_t dir_objectid, const InodeItem& victim,
                                      uint64_t victim_objectid);
// vfs_link: no new name for an immutable or append-only inode.
[[nodiscard]] Status check_may_link(const InodeItem& ii, uint64_t objectid);
// may_open: no write access to an immutable inode; an append-only one only with O_APPEND, never
// O_TRUNC.
[[nodiscard]] Status check_may_open(const InodeItem& ii, uint64_t objectid, int open_flags);
// A write at `offset`: none to an immutable file, only at the end of an append-only one.
[[nodiscard]] Status check_may_write(const InodeItem& ii, uint64_t objectid, uint64_t offset);
// vfs_fallocate: none on an immutable file, only plain / KEEP_SIZE allocation on an append-only one.
[[nodiscard]] Status check_may_fallocate(const InodeItem& ii, uint64_t objectid, int mode);
// may_setattr and do_truncate: size, mode, owner and explicit times need neither flag; setting
// the times to now ("touch") needs only not immutable.
struct SetAttrKinds {
  bool size = false, mode_or_owner = false, times_set = false, times_now = false;
};
[[nodiscard]] Status check_may_setattr(const InodeItem& ii, uint64_t objectid, const SetAttrKinds& k);
// xattr_permission for a write (set or remove): neither flag.
[[nodiscard]] Status check_may_write_xattr(const InodeItem& ii, uint64_t objectid);

}  // namespace ubtrfs::fs
