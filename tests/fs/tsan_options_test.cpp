// TSan settings for the fs test binary: the same as tests/tree/tsan_options_test.cpp, for the
// same reason. fs operations run the concurrent B-tree, whose lock coupling orders tree locks by
// position, not identity (siblings are locked only under their write-locked parent), so TSan's
// identity-based lock-order detector reports a split's push-left / push-right pair as a cycle.
// Data-race detection stays on.
#if defined(__SANITIZE_THREAD__)
extern "C" const char* __tsan_default_options() { return "detect_deadlocks=0"; }
#endif
