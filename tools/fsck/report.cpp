// Report implementation: progress lines, streamed problem lines and the JSON document; see report.h.
#include "tools/fsck/report.h"

#include <fmt/format.h>

#include <cstdio>
#include <nlohmann/json.hpp>

#include "tree/print_tree.h"

namespace ubtrfs::fsck {

const std::vector<ClassInfo> kClasses = {
    {"super", "primary superblock invalid or inconsistent with the filesystem (FORMAT.md §1)"},
    {"super-mirror", "a superblock mirror is invalid or differs from the primary (§1.1)"},
    {"backup-root", "a backup root slot is not sane (§1.6)"},
    {"super-bytes-used", "super bytes_used differs from the sum of allocated extents (§6.1.3)"},
    {"sys-chunk-array", "sys_chunk_array differs from the SYSTEM chunks of the chunk tree (§1.3)"},
    {"chunk", "a chunk item is invalid, or has no block group (§3.10)"},
    {"dev-extent", "a chunk stripe without DEV_EXTENT, a DEV_EXTENT without chunk, or overlaps (§3.10)"},
    {"dev-item", "DEV_ITEM bytes_used differs from the sum of DEV_EXTENT lengths (§3.10)"},
    {"tree-block-csum", "tree block checksum mismatch (§2.1)"},
    {"tree-block-header", "tree block header wrong: bytenr, fsid, level, owner, backref revision, first key (§2.1)"},
    {"transid", "tree block generation differs from its parent pointer's generation (§2.1)"},
    {"tree-checker", "tree block structure or item body invalid: key order, item layout, name hash (§2.3, §3)"},
    {"tree-block-placement", "tree block outside a metadata/system chunk or unmapped (§2.1)"},
    {"dup-mirror", "copies of a DUP tree block differ or one copy is corrupt (§7.5)"},
    {"extent-backref", "tree block without a correct METADATA_ITEM / TREE_BLOCK_REF (§6.1.1)"},
    {"extent-refs", "extent item refs differ from the references found (§3.9, §6.1.2)"},
    {"extent-orphan", "extent item nothing refers to, or a reference without extent item (§6.1)"},
    {"block-group", "block group used differs from the extents inside, or has no chunk (§3.11)"},
    {"free-space", "free space tree differs from the complement of the extent tree (§3.12)"},
    {"free-space-stale", "stale free space entries (known mkfs.btrfs 6.2 bug, §5.2) - warning"},
    {"inode-missing", "an item or name refers to an inode without INODE_ITEM (§3.3)"},
    {"inode-nlink", "inode link count differs from its names; directories must have 1 (§4.5)"},
    {"inode-nbytes", "inode nbytes differs from the bytes its extents reference (§3.3)"},
    {"inode-orphan", "inode with nlink 0 and no ORPHAN_ITEM (§6.1.5)"},
    {"file-extent", "file extents overlap, or leave a gap without NO_HOLES (§3.7)"},
    {"dir-isize", "directory size is not 2 x the sum of its name lengths (§4.5)"},
    {"dir-entry", "DIR_ITEM / DIR_INDEX / INODE_REF of one name missing or disagreeing (§4.2)"},
    {"root-ref", "subvolume entry without matching ROOT_REF/ROOT_BACKREF (§3.13)"},
    {"csum-missing", "data extent of a checksummed inode not covered by EXTENT_CSUM items (§3.8)"},
    {"csum-odd", "checksums for a NODATASUM inode's extent (§3.8)"},
    {"csum-orphan", "checksums for a range with no data extent, or overlapping csum items (§3.8)"},
    {"data-csum", "data does not match its checksum (--check-data-csum)"},
};

void Report::begin_pass(const std::string& name) {
  PassRecord p;
  p.index = static_cast<int>(passes_.size()) + 1;
  p.name = name;
  passes_.push_back(p);
  pass_start_ = std::chrono::steady_clock::now();
  if (progress_) std::fprintf(stderr, "[%d/%d] %s\n", p.index, total_passes_, name.c_str());
}

void Report::end_pass() {
  if (passes_.empty()) return;
  passes_.back().seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - pass_start_).count();
}

void Report::skip_pass(const std::string& name, const std::string& reason) {
  begin_pass(name);
  passes_.back().skipped = true;
  passes_.back().skip_reason = reason;
  if (streaming_) std::printf("skipped %s: %s\n", name.c_str(), reason.c_str());
  end_pass();
}

void Report::error(const std::string& cls, const Where& where, std::string message) {
  add(Severity::kError, cls, where, std::move(message));
}

void Report::warning(const std::string& cls, const Where& where, std::string message) {
  add(Severity::kWarning, cls, where, std::move(message));
}

void Report::add(Severity sev, const std::string& cls, const Where& where, std::string message) {
  for (char& c : message)
    if (c == '\n') c = ' ';  // one line per problem, always
  Problem p{sev, cls, where, std::move(message), passes_.empty() ? 0 : passes_.back().index};
  if (sev == Severity::kError) {
    ++errors_;
    if (!passes_.empty()) ++passes_.back().errors;
  } else {
    ++warnings_;
    if (!passes_.empty()) ++passes_.back().warnings;
  }
  if (streaming_)
    std::printf("%s: [%s] %s\n", sev == Severity::kError ? "ERROR" : "WARNING", p.cls.c_str(), p.message.c_str());
  problems_.push_back(std::move(p));
}

std::string Report::json(const std::string& device, int exit_code,
                         const std::vector<std::pair<std::string, uint64_t>>& stats) const {
  using nlohmann::json;
  json doc;
  doc["device"] = device;
  doc["exit_code"] = exit_code;
  json passes = json::array();
  for (const auto& p : passes_) {
    json j{{"index", p.index},   {"name", p.name},         {"seconds", p.seconds},
           {"errors", p.errors}, {"warnings", p.warnings}, {"skipped", p.skipped}};
    if (p.skipped) j["skip_reason"] = p.skip_reason;
    passes.push_back(std::move(j));
  }
  doc["passes"] = std::move(passes);
  json problems = json::array();
  json by_class = json::object();
  for (const auto& p : problems_) {
    json j{{"severity", p.severity == Severity::kError ? "error" : "warning"},
           {"class", p.cls},
           {"pass", p.pass},
           {"message", p.message}};
    if (p.where.tree) j["tree"] = *p.where.tree;
    if (p.where.bytenr) j["bytenr"] = *p.where.bytenr;
    if (p.where.key)
      j["key"] = json{{"objectid", p.where.key->objectid},
                      {"type", p.where.key->type},
                      {"offset", p.where.key->offset},
                      {"text", key_text(*p.where.key)}};
    if (p.where.inode) j["inode"] = *p.where.inode;
    problems.push_back(std::move(j));
    by_class[p.cls] = by_class.value(p.cls, 0) + 1;
  }
  doc["errors"] = std::move(problems);
  json counts{{"errors", errors_}, {"warnings", warnings_}, {"by_class", by_class}};
  for (const auto& [name, value] : stats) counts[name] = value;
  doc["counts"] = std::move(counts);
  return doc.dump(2);
}

std::string key_text(const Key& k) {
  // Offsets in the reserved top range (-1 for snapshot ROOT_ITEM locations, ...) print signed.
  const std::string offset = k.offset > kLastFreeObjectid ? fmt::format("{}", static_cast<int64_t>(k.offset))
                                                          : fmt::format("{}", k.offset);
  return fmt::format("({} {} {})", objectid_str(k.objectid, k.type), key_type_str(k.objectid, k.type), offset);
}

}  // namespace ubtrfs::fsck
