# UBTRFS_VERSION_STRING: what every tool prints for --version — the project version, plus
# `git describe` of the source tree when it is a git checkout (e.g. "0.1.0 (git 79ea5e7)").
# Taken at configure time: a build from a newer commit without reconfiguring still names the
# commit it was configured at (cmake --fresh, or any CMakeLists change, refreshes it).
set(UBTRFS_VERSION_STRING "${PROJECT_VERSION}")
find_package(Git QUIET)
if(GIT_FOUND AND EXISTS "${CMAKE_SOURCE_DIR}/.git")
  execute_process(COMMAND "${GIT_EXECUTABLE}" describe --always --tags
                  WORKING_DIRECTORY "${CMAKE_SOURCE_DIR}" OUTPUT_VARIABLE _ubtrfs_describe
                  OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE _ubtrfs_describe_rc)
  if(_ubtrfs_describe_rc EQUAL 0 AND _ubtrfs_describe)
    string(APPEND UBTRFS_VERSION_STRING " (git ${_ubtrfs_describe})")
  endif()
endif()
# ubtrfs_tool_version(TARGET): TARGET's sources see UBTRFS_VERSION as that string.
function(ubtrfs_tool_version target)
  target_compile_definitions(${target} PRIVATE UBTRFS_VERSION="${UBTRFS_VERSION_STRING}")
endfunction()
