// Inode flags: the flag arithmetic, the enforcement checks and Filesystem's get/set entry points;
// see inode_flags.h.
#include "fs/inode_flags.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>

#include "fs/file_data.h"
#include "fs/filesystem.h"
#include "fs/transaction.h"
#include "fs/xattr.h"

namespace ubtrfs::fs {

namespace {

// The BTRFS_INODE_* flag behind each FS_*_FL one that maps one to one.
struct FlagPair {
  uint64_t inode;
  uint32_t fs;
};
constexpr FlagPair kSimple[] = {
    {kInodeSync, kFsSyncFl},       {kInodeImmutable, kFsImmutableFl}, {kInodeAppend, kFsAppendFl},
    {kInodeNodump, kFsNodumpFl},   {kInodeNoatime, kFsNoatimeFl},     {kInodeDirsync, kFsDirsyncFl},
    {kInodeNodatacow, kFsNocowFl},
};
// The ones FS_IOC_FSSETXATTR changes (btrfs_fileattr_set before its "skip unconverted flags").
constexpr uint64_t kXattrSettable = kInodeSync | kInodeImmutable | kInodeAppend | kInodeNodump | kInodeNoatime;

// The FS_*_FL <-> FS_XFLAG_* pairs of fileattr_fill_flags / fileattr_fill_xflags.
struct XflagPair {
  uint32_t fs;
  uint32_t x;
};
constexpr XflagPair kXflags[] = {
    {kFsSyncFl, kXflagSync},     {kFsImmutableFl, kXflagImmutable}, {kFsAppendFl, kXflagAppend},
    {kFsNodumpFl, kXflagNodump}, {kFsNoatimeFl, kXflagNoatime},     {kFsDaxFl, kXflagDax},
    {kFsProjinheritFl, kXflagProjinherit}, {kFsVerityFl, kXflagVerity},
};

Status eperm(std::string_view what, uint64_t objectid, const char* why) {
  return fail(EPERM, "{} inode {}: {}", what, objectid, why);
}

}  // namespace

uint32_t inode_flags_to_fsflags(uint64_t inode_flags) {
  uint32_t out = 0;
  for (const auto& p : kSimple)
    if (inode_flags & p.inode) out |= p.fs;
  // NOCOMPRESS wins over COMPRESS when both are set (the kernel's order).
  if (inode_flags & kInodeNocompress)
    out |= kFsNocompFl;
  else if (inode_flags & kInodeCompress)
    out |= kFsComprFl;
  return out;
}

uint32_t fsflags_to_xflags(uint32_t fsflags) {
  uint32_t x = 0;
  for (const auto& p : kXflags)
    if (fsflags & p.fs) x |= p.x;
  return x;
}

uint32_t xflags_to_fsflags(uint32_t xflags) {
  uint32_t f = 0;
  for (const auto& p : kXflags)
    if (xflags & p.x) f |= p.fs;
  return f;
}

FsXattr inode_flags_to_fsxattr(uint64_t inode_flags) {
  FsXattr x;
  x.xflags = fsflags_to_xflags(inode_flags_to_fsflags(inode_flags));
  return x;
}

uint32_t mask_fsflags_for_type(uint32_t mode, uint32_t fsflags) {
  if (S_ISDIR(mode)) return fsflags;
  if (S_ISREG(mode)) return fsflags & ~kFsDirsyncFl;
  return fsflags & (kFsNodumpFl | kFsNoatimeFl);
}

Status check_fsflags(uint32_t old_fsflags, uint32_t fsflags) {
  constexpr uint32_t kSupported = kFsImmutableFl | kFsAppendFl | kFsNoatimeFl | kFsNodumpFl | kFsSyncFl |
                                  kFsDirsyncFl | kFsNocompFl | kFsComprFl | kFsNocowFl;
  if (fsflags & ~kSupported)
    return fail(EOPNOTSUPP, "inode flags {:#x} include {:#x}, which btrfs does not support", fsflags,
                fsflags & ~kSupported);
  if ((fsflags & kFsNocompFl) && (fsflags & kFsComprFl))
    return fail(EINVAL, "inode flags {:#x}: compress and nocompress together", fsflags);
  if ((fsflags & kFsComprFl) && (fsflags & kFsNocowFl))
    return fail(EINVAL, "inode flags {:#x}: compress and nocow together", fsflags);
  // NOCOW and the compression flags exclude each other across the old and the new flags too.
  if ((old_fsflags & kFsNocowFl) && (fsflags & (kFsComprFl | kFsNocompFl)))
    return fail(EINVAL, "inode flags {:#x}: a compression flag on a nocow inode", fsflags);
  if ((fsflags & kFsNocowFl) && (old_fsflags & (kFsComprFl | kFsNocompFl)))
    return fail(EINVAL, "inode flags {:#x}: nocow on an inode with a compression flag", fsflags);
  return {};
}

FlagChange apply_fsflags(uint32_t mode, uint64_t size, uint64_t old_flags, uint32_t fsflags, bool from_fsxattr) {
  FlagChange out;
  uint64_t flags = old_flags;
  auto set = [&](uint64_t bit, bool on) { flags = on ? flags | bit : flags & ~bit; };
  for (const auto& p : kSimple)
    if (p.inode & kXattrSettable) set(p.inode, fsflags & p.fs);
  out.flags = flags;
  if (from_fsxattr) return out;  // FS_IOC_FSSETXATTR cannot express the others: they stay

  set(kInodeDirsync, fsflags & kFsDirsyncFl);
  // NODATACOW of a regular file changes only while it is empty, with NODATASUM: no extent then has
  // (or lacks) checksums that would disagree with the flag. Otherwise the request is silently
  // ignored so the flag keeps telling the truth about the data.
  const bool nocow = fsflags & kFsNocowFl;
  if (S_ISREG(mode)) {
    if (size == 0) set(kInodeNodatacow | kInodeNodatasum, nocow);
  } else {
    set(kInodeNodatacow, nocow);
  }
  // Only users change COMPRESS; NOCOMPRESS may also be set by the compression code itself.
  if (fsflags & kFsNocompFl) {
    flags = (flags & ~kInodeCompress) | kInodeNocompress;
    out.compression_prop = "";
  } else if (fsflags & kFsComprFl) {
    flags = (flags & ~kInodeNocompress) | kInodeCompress;
    out.compression_prop = std::string(kDefaultCompressionProp);
  } else {
    flags &= ~(kInodeCompress | kInodeNocompress);
    out.compression_prop = "";
  }
  out.flags = flags;
  return out;
}

Result<uint32_t> fsxattr_to_fsflags(const FsXattr& x, uint32_t old_fsflags) {
  // fileattr_set_prepare: extent size hints of zero turn their flags off.
  uint32_t xflags = x.xflags;
  if (x.extsize == 0) xflags &= ~(kXflagExtsize | kXflagExtszinherit);
  if (x.cowextsize == 0) xflags &= ~kXflagCowextsize;
  if ((xflags & ~kXflagCommon) || x.extsize != 0 || x.projid != 0 || x.cowextsize != 0)
    return fail(EOPNOTSUPP, "fsxattr xflags {:#x} extsize {} projid {} cowextsize {}: btrfs stores only the common flags",
                xflags, x.extsize, x.projid, x.cowextsize);
  return xflags_to_fsflags(xflags) | (old_fsflags & ~kFsCommonFl);
}

uint64_t inherit_flags(uint64_t dir_flags, uint32_t mode) {
  uint64_t flags = 0;
  if (dir_flags & kInodeNocompress)
    flags |= kInodeNocompress;
  else if (dir_flags & kInodeCompress)
    flags |= kInodeCompress;
  if (dir_flags & kInodeNodatacow) {
    flags |= kInodeNodatacow;
    if (S_ISREG(mode)) flags |= kInodeNodatasum;
  }
  return flags;
}

// ---- enforcement -----------------------------------------------------------------------------------

Status check_may_create(const InodeItem& dir, uint64_t dir_objectid) {
  if (is_immutable(dir)) return eperm("create in directory", dir_objectid, "the directory is immutable");
  return {};
}

Status check_may_delete(const InodeItem& dir, uint64_t dir_objectid, const InodeItem& victim,
                        uint64_t victim_objectid) {
  if (is_immutable(dir)) return eperm("remove a name from directory", dir_objectid, "the directory is immutable");
  if (is_append(dir)) return eperm("remove a name from directory", dir_objectid, "the directory is append-only");
  if (is_immutable(victim)) return eperm("remove a name of", victim_objectid, "the inode is immutable");
  if (is_append(victim)) return eperm("remove a name of", victim_objectid, "the inode is append-only");
  return {};
}

Status check_may_link(const InodeItem& ii, uint64_t objectid) {
  if (is_immutable(ii)) return eperm("link", objectid, "the inode is immutable");
  if (is_append(ii)) return eperm("link", objectid, "the inode is append-only");
  return {};
}

Status check_may_open(const InodeItem& ii, uint64_t objectid, int open_flags) {
  const bool writes = (open_flags & O_ACCMODE) != O_RDONLY;
  if (is_immutable(ii) && (writes || (open_flags & O_TRUNC)))
    return eperm("open for writing", objectid, "the inode is immutable");
  if (is_append(ii)) {
    if (writes && !(open_flags & O_APPEND))
      return eperm("open for writing without O_APPEND", objectid, "the inode is append-only");
    if (open_flags & O_TRUNC) return eperm("open with O_TRUNC", objectid, "the inode is append-only");
  }
  return {};
}

Status check_may_write(const InodeItem& ii, uint64_t objectid, uint64_t offset) {
  if (is_immutable(ii)) return eperm("write to", objectid, "the inode is immutable");
  if (is_append(ii) && offset != ii.size.get())
    return fail(EPERM, "write to inode {} at {}: the inode is append-only and its end is at {}", objectid, offset,
                ii.size.get());
  return {};
}

Status check_may_fallocate(const InodeItem& ii, uint64_t objectid, int mode) {
  if (is_immutable(ii)) return eperm("fallocate on", objectid, "the inode is immutable");
  if (is_append(ii) && (mode & ~FALLOC_FL_KEEP_SIZE))
    return fail(EPERM, "fallocate mode {:#x} on inode {}: the inode is append-only", mode, objectid);
  return {};
}

Status check_may_setattr(const InodeItem& ii, uint64_t objectid, const SetAttrKinds& k) {
  const bool locked = is_immutable(ii) || is_append(ii);
  if (k.size && locked) return eperm("truncate", objectid, is_immutable(ii) ? "the inode is immutable" : "the inode is append-only");
  if ((k.mode_or_owner || k.times_set) && locked)
    return eperm("change the attributes of", objectid,
                 is_immutable(ii) ? "the inode is immutable" : "the inode is append-only");
  if (k.times_now && is_immutable(ii)) return eperm("touch", objectid, "the inode is immutable");
  return {};
}

Status check_may_write_xattr(const InodeItem& ii, uint64_t objectid) {
  if (is_immutable(ii)) return eperm("change an xattr of", objectid, "the inode is immutable");
  if (is_append(ii)) return eperm("change an xattr of", objectid, "the inode is append-only");
  return {};
}

// ---- Filesystem entry points ------------------------------------------------------------------------

Result<uint32_t> Filesystem::get_fsflags(uint64_t ino) {
  UBTRFS_TRY_STATUS(fs_->check_shutdown("get inode flags"));
  const InodeId id = UBTRFS_TRY(numbers_.from_fuse(ino));
  auto* rec = UBTRFS_TRY(fs_->fs_root(id.subvol));
  const InodeItem ii = UBTRFS_TRY(read_inode(*fs_, *rec->tree, id.objectid));
  return inode_flags_to_fsflags(ii.flags.get());
}

Result<FsXattr> Filesystem::get_fsxattr(uint64_t ino) {
  UBTRFS_TRY_STATUS(fs_->check_shutdown("get fsxattr"));
  const InodeId id = UBTRFS_TRY(numbers_.from_fuse(ino));
  auto* rec = UBTRFS_TRY(fs_->fs_root(id.subvol));
  const InodeItem ii = UBTRFS_TRY(read_inode(*fs_, *rec->tree, id.objectid));
  return inode_flags_to_fsxattr(ii.flags.get());
}

Status Filesystem::set_fsflags(uint64_t ino, uint32_t fsflags, const Caller& c) {
  return change_flags(ino, std::nullopt, fsflags, c);
}

Status Filesystem::set_fsxattr(uint64_t ino, const FsXattr& x, const Caller& c) {
  return change_flags(ino, x, 0, c);
}

// vfs_fileattr_set + btrfs_fileattr_set: ownership, the flags' own rules, CAP_LINUX_IMMUTABLE for
// IMMUTABLE / APPEND, then one handle (the inode item and the compression property) with a new ctime.
Status Filesystem::change_flags(uint64_t ino, std::optional<FsXattr> x, uint32_t fsflags, const Caller& c) {
  UBTRFS_TRY_STATUS(fs_->check_shutdown("set inode flags"));
  if (fs_->read_only() || unmounted_) return fail(EROFS, "set flags of inode {}: read-only filesystem", ino);
  UBTRFS_TRY_STATUS(check_subvol_writable(ino, "set flags"));
  const InodeId id = UBTRFS_TRY(numbers_.from_fuse(ino));
  auto* rec = UBTRFS_TRY(fs_->fs_root(id.subvol));
  TreeRoot& root = *rec->tree;
  auto guard = locks_.lock({id});
  InodeItem ii = UBTRFS_TRY(read_inode(*fs_, root, id.objectid));
  if (c.uid != ii.uid.get() && !c.cap_fowner)
    return fail(EPERM, "set flags of inode {}: uid {} does not own it (owner {})", ino, c.uid, ii.uid.get());
  const uint32_t mode = ii.mode.get();
  const uint32_t old_fsflags = inode_flags_to_fsflags(ii.flags.get());
  if (x) fsflags = UBTRFS_TRY(fsxattr_to_fsflags(*x, old_fsflags));
  // fileattr_set_prepare compares the caller's word before btrfs masks it by type.
  if (((fsflags ^ old_fsflags) & (kFsImmutableFl | kFsAppendFl)) && !c.cap_linux_immutable)
    return fail(EPERM, "set flags of inode {}: changing immutable or append-only needs CAP_LINUX_IMMUTABLE", ino);
  const uint32_t masked = mask_fsflags_for_type(mode, fsflags);
  UBTRFS_TRY_STATUS(check_fsflags(old_fsflags, masked));
  FlagChange change = apply_fsflags(mode, ii.size.get(), ii.flags.get(), masked, x.has_value());
  // btrfs_fileattr_set: +c stores the mount's compression type, zlib when the mount has none.
  if (change.compression_prop && *change.compression_prop == kDefaultCompressionProp &&
      data_->compress_options().type != kCompressNone)
    change.compression_prop = std::string(compress_type_name(data_->compress_options().type));

  std::optional<std::vector<uint8_t>> prop;
  if (change.compression_prop) prop = UBTRFS_TRY(get_xattr(root, id.objectid, kCompressionProp));
  // btrfs_fileattr_set: 1 item for the inode, 2 for the property.
  auto th = UBTRFS_TRY(fs_->transactions().start(change.compression_prop ? 3 : 1));
  // The first change (the property, else the inode item) changes nothing when it fails; a failure
  // after it aborts (see filesystem_ns.cpp).
  bool changed = false;
  if (change.compression_prop && !change.compression_prop->empty()) {
    const auto& v = *change.compression_prop;
    UBTRFS_TRY_STATUS(set_xattr(th.tree(), root, id.objectid, kCompressionProp,
                                std::span(reinterpret_cast<const uint8_t*>(v.data()), v.size()), 0));
    changed = true;
  } else if (change.compression_prop && prop) {
    UBTRFS_TRY_STATUS(remove_xattr(th.tree(), root, id.objectid, kCompressionProp));
    changed = true;
  }
  ii.flags = change.flags;
  ii.ctime = now_btrfs();
  if (auto st = update_inode(th, root, id.objectid, ii); !st) {
    if (changed) return th.abort(st.error());
    return st;
  }
  th.end();
  return {};
}

}  // namespace ubtrfs::fs
