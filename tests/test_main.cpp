// Catch2 entry point shared by the per-layer unit test binaries. Logging is quiet unless
// UBTRFS_TEST_LOG=debug|info|... is set, so failures print only what the assertions say.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cstdlib>

#include <spdlog/spdlog.h>

int main(int argc, char** argv) {
  const char* lvl = std::getenv("UBTRFS_TEST_LOG");
  spdlog::set_level(lvl ? spdlog::level::from_str(lvl) : spdlog::level::warn);
  return Catch::Session().run(argc, argv);
}
