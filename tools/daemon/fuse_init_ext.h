// FuseInitExt: what the daemon asks of the kernel at INIT that libfuse 3.14 cannot negotiate
// (it stops at protocol 7.38 and has no flag for these): today FUSE_HANDLE_KILLPRIV_V2 (Linux 5.11;
// libfuse 3.16 would call it FUSE_CAP_HANDLE_KILLPRIV_V2).
//
// Why KILLPRIV_V2: without it the kernel keeps no "nothing to kill" state on FUSE inodes (it sets
// SB_NOSEC on the superblock only with this flag), so before every write() it asks GETXATTR
// security.capability — one round trip per write, as many as the WRITEs themselves (counted with
// `ubtrfs -d`: 16,684 WRITE, 16,684 GETXATTR in a 4 KiB random-write run). With it the kernel asks
// once and marks the inode S_NOSEC, and the filesystem takes over what the VFS's file_remove_privs
// did (fs/remove_privs.cpp): a WRITE carrying FUSE_WRITE_KILL_SUIDGID (a writer without
// CAP_FSETID) clears S_ISUID, and S_ISGID when group-executable; a SETATTR of the size carrying
// FATTR_KILL_SUIDGID likewise; chown clears them (fs setattr already did); and every write, size
// change, fallocate and copy into a file removes security.capability.
//
// How: libfuse's custom-I/O hooks (installed by FuseUring, fuse_uring.h, which owns them since a
// session takes one set) pass every INIT request to on_init_request and every INIT reply to
// on_init_reply before it is written. A flag is set in the reply only if the kernel offered it in
// the request; negotiated() says what was agreed, for the operations.
//
// Thread safety: INIT is read and answered once, before any other request; negotiated() is an
// atomic read.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ubtrfs::daemon::init_ext {

// The INIT request's argument (fuse_init_in, `len` bytes): records what the kernel offers.
void on_init_request(const void* init_in, size_t len);
// The INIT reply's argument (fuse_init_out, `len` bytes), before it is written: adds the wanted
// flags the kernel offered and records them as negotiated.
void on_init_reply(void* init_out, size_t len);
// FUSE_HANDLE_KILLPRIV_V2 is in force on this connection.
bool kill_priv_v2();
// A WRITE whose write_flags could not be read from the request buffer (fuse_ops.cpp: the caller's
// capabilities then decide); shown in the stats, 0 in every run so far.
void count_unreadable_write_flags();
uint64_t unreadable_write_flags();

}  // namespace ubtrfs::daemon::init_ext
