# Installation and the Debian package.
#
# `cmake --install build [--prefix P]` (DESTDIR honoured) installs:
#   sbin/ubtrfs, sbin/mkfs.ubtrfs, sbin/fsck.ubtrfs   (the daemon, and the mkfs(8)/fsck(8) helpers)
#   bin/ubtrfs-inspect, bin/ubtrfs-stress, bin/ubtrfs-ctl
#   share/man/man8/<tool>.8                           (when go-md2man was found)
#   share/bash-completion/completions/<tool>          (one copy of packaging/bash-completion/ubtrfs each)
#   share/doc/ubtrfs/README.md, LICENSE
# Not installed: ubtrfs-corrupt (damages images for the tests), ubtrfs-bench and ubtrfs-cowbench
# (the measurements of scripts/bench.sh and the COW experiment; run from the build tree).
# The tools' install() lines are in their own tools/*/CMakeLists.txt.
#
# `mount -t fuse.ubtrfs` needs no file of ours besides the daemon: mount(8) runs fuse3's
# /sbin/mount.fuse (a link to mount.fuse3) for any fuse.* type, and it runs `ubtrfs` found on
# PATH; with prefix /usr or /usr/local the daemon is on root's default PATH. (A private helper
# /sbin/mount.fuse.ubtrfs, as the xfstests harness installs, would take precedence; the package
# ships none so it never replaces one.)
#
# `cpack -G DEB` (from the build directory) packages the same files under /usr: the shared library
# dependencies come from dpkg-shlibdeps (libfuse3-3, liburing2, ...), plus fuse3 for fusermount3
# and mount.fuse3. Binaries are stripped in the package.
include(GNUInstallDirs)

# Man pages: written once in Markdown (packaging/man/*.8.md), turned into roff by go-md2man
# (Debian package go-md2man) at build time. Without it the build goes on without man pages.
file(GLOB UBTRFS_MAN_SOURCES CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/packaging/man/*.md)
find_program(GO_MD2MAN go-md2man)
set(UBTRFS_MAN_PAGES "")
if(GO_MD2MAN)
  foreach(src ${UBTRFS_MAN_SOURCES})
    get_filename_component(page ${src} NAME_WLE)  # ubtrfs.8
    # The title line carries the version: the source goes through configure_file first.
    configure_file(${src} ${CMAKE_BINARY_DIR}/man/${page}.md @ONLY)
    add_custom_command(OUTPUT ${CMAKE_BINARY_DIR}/man/${page}
                       COMMAND ${GO_MD2MAN} -in ${CMAKE_BINARY_DIR}/man/${page}.md -out ${CMAKE_BINARY_DIR}/man/${page}
                       DEPENDS ${CMAKE_BINARY_DIR}/man/${page}.md
                       COMMENT "man page ${page}")
    list(APPEND UBTRFS_MAN_PAGES ${CMAKE_BINARY_DIR}/man/${page})
  endforeach()
  add_custom_target(man_pages ALL DEPENDS ${UBTRFS_MAN_PAGES})
  install(FILES ${UBTRFS_MAN_PAGES} DESTINATION ${CMAKE_INSTALL_MANDIR}/man8)
else()
  message(STATUS "go-md2man not found: man pages are not built nor installed (apt-get install go-md2man)")
endif()

foreach(tool ubtrfs mkfs.ubtrfs fsck.ubtrfs ubtrfs-inspect ubtrfs-stress ubtrfs-ctl)
  install(FILES ${CMAKE_SOURCE_DIR}/packaging/bash-completion/ubtrfs
          DESTINATION ${CMAKE_INSTALL_DATADIR}/bash-completion/completions RENAME ${tool})
endforeach()
install(FILES ${CMAKE_SOURCE_DIR}/README.md ${CMAKE_SOURCE_DIR}/LICENSE DESTINATION ${CMAKE_INSTALL_DOCDIR})

set(CPACK_PACKAGE_NAME ubtrfs)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_VENDOR "ubtrfs")
set(CPACK_PACKAGE_CONTACT "ubtrfs maintainers <ubtrfs@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "userspace read-write btrfs-compatible filesystem (FUSE)")
set(CPACK_PACKAGE_DESCRIPTION
    "ubtrfs mounts btrfs images and block devices through FUSE, read-write; what it writes passes
btrfs check and mounts in the Linux kernel. Includes mkfs.ubtrfs, fsck.ubtrfs, ubtrfs-inspect,
ubtrfs-stress and ubtrfs-ctl.")
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "fuse3")
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "btrfs-progs")
include(CPack)
