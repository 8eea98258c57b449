// TSan settings for the daemon when built with -DUBTRFS_SANITIZE=thread (tests run it so under
// the POSIX suite and a stress run). As for the tree and fs test binaries: B-tree lock coupling
// orders tree locks by position, not identity, which TSan's lock-order detector cannot see
// (tests/tree/tsan_options_test.cpp explains it); data-race detection stays on.
#if defined(__SANITIZE_THREAD__)
extern "C" const char* __tsan_default_options() { return "detect_deadlocks=0"; }
#endif
