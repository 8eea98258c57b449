// Manifests: a canonical text description of a directory tree, for comparing what two mounts
// (or one mount before and after a remount) see of the same filesystem.
//
// Owns: the manifest format, the walk that produces it and the comparison of two manifests.
// One line per name, depth-first with the names of each directory sorted bytewise, the root
// first as ".":
//
//   <path>\ttype=<file|dir|symlink|...>\tmode=<octal>\tuid=<n>\tgid=<n>\tsize=<n>\tnlink=<n>
//         \tmtime=<s.ns>\tctime=<s.ns>[\ttarget=<escaped>][\thardlink=<first path>]
//         [\txattrs=<name:len:xxh64,...>][\tdata=<xxh64 of the content>]
//
// Paths and symlink targets escape bytes outside 0x21..0x7e and '\\', '#', '=' as \xHH, so a
// line never contains a raw tab or newline. Inode numbers are not recorded (another mount may
// number differently); hard links are recorded as the first path of the same inode instead.
// atime is excluded because the walk itself reads the files. Lines starting with '#' are
// comments. The walk never follows symlinks.
#pragma once

#include <string>
#include <vector>

namespace ubtrfs::stress {

// Walks `dir` and returns its manifest lines. False (with *error) if something cannot be read.
bool build_manifest(const std::string& dir, std::vector<std::string>* lines, std::string* error);

bool write_manifest(const std::string& file, const std::vector<std::string>& lines, std::string* error);
bool read_manifest(const std::string& file, std::vector<std::string>* lines, std::string* error);

// Differences between two manifests, one human-readable message each; empty when they agree.
std::vector<std::string> compare_manifests(const std::vector<std::string>& expected,
                                           const std::vector<std::string>& actual);

}  // namespace ubtrfs::stress
