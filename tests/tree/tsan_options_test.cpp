// TSan settings for the tree test binary.
//
// B-tree lock coupling orders tree locks by position (parent before child; siblings only under their
// write-locked parent), not by mutex identity, and a block's position changes (a root leaf gets a
// new root above it; a leaf becomes the left sibling of a split-off leaf). The kernel tells lockdep
// about this with nesting classes (btrfs_set_buffer_lockdep_class per level); TSan has no such
// annotation, so its identity-based lock-order ("potential deadlock") detector reports every role
// change. It is switched off here; data-race detection, the purpose of the TSan run, stays on.
// The deadlock-freedom argument is in tree/ctree.h and tree/extent_buffer.h (lock order).
#if defined(__SANITIZE_THREAD__)
extern "C" const char* __tsan_default_options() { return "detect_deadlocks=0"; }
#endif
