// Report: what fsck.ubtrfs found, pass by pass, in a form both people and scripts can read.
//
// Owns: the list of passes run (index, name, seconds, problems found in each), and every problem
// found (severity, class, where: tree, bytenr, key, inode; and the message). A problem's message is
// complete on its own — it names what and where (bytenr in decimal, keys as (objectid TYPE offset),
// inode, root) — and is printed on one line, lowercase, never split, so it can be grepped. The
// optional fields repeat the location for the JSON form.
//
// Classes are short stable names ("inode-nlink", "tree-block-csum", ...) listed in kClasses below
// with what each means; the oracle test greps for them. Warnings (severity kWarning) do not make the
// exit status non-zero: they describe known harmless states, such as the stale free space entries
// mkfs.btrfs 6.2 leaves behind (FORMAT.md §10.1).
//
// Lifecycle: main creates one Report, each pass calls begin_pass/… error()/warning() …/end_pass,
// then main prints either the text summary or the JSON document. Not thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "tree/format.h"

namespace ubtrfs::fsck {

enum class Severity { kError, kWarning };

// Where a problem is. Every field is optional; the message already says all of it in words.
struct Where {
  std::optional<uint64_t> tree;
  std::optional<uint64_t> bytenr;
  std::optional<Key> key;
  std::optional<uint64_t> inode;
};

struct Problem {
  Severity severity = Severity::kError;
  std::string cls;
  Where where;
  std::string message;
  int pass = 0;
};

struct PassRecord {
  int index = 0;
  std::string name;
  double seconds = 0;
  int errors = 0;
  int warnings = 0;
  bool skipped = false;
  std::string skip_reason;
};

// The problem classes, with a one-line meaning each (also printed by --help-classes).
struct ClassInfo {
  const char* name;
  const char* meaning;
};
extern const std::vector<ClassInfo> kClasses;

class Report {
 public:
  Report(int total_passes, bool progress) : total_passes_(total_passes), progress_(progress) {}

  void begin_pass(const std::string& name);
  void end_pass();
  void skip_pass(const std::string& name, const std::string& reason);

  void error(const std::string& cls, const Where& where, std::string message);
  void warning(const std::string& cls, const Where& where, std::string message);

  int error_count() const { return errors_; }
  int warning_count() const { return warnings_; }
  const std::vector<Problem>& problems() const { return problems_; }
  const std::vector<PassRecord>& passes() const { return passes_; }

  // Lines "ERROR: [class] message" / "WARNING: [class] message" are printed as problems arrive
  // when streaming is on (the text mode); the JSON mode collects silently.
  void set_streaming(bool on) { streaming_ = on; }

  // The JSON document (passes, problems, counts, plus `extra` fields such as the device name).
  std::string json(const std::string& device, int exit_code,
                   const std::vector<std::pair<std::string, uint64_t>>& stats) const;

 private:
  void add(Severity sev, const std::string& cls, const Where& where, std::string message);

  int total_passes_;
  bool progress_;
  bool streaming_ = true;
  int errors_ = 0;
  int warnings_ = 0;
  std::vector<Problem> problems_;
  std::vector<PassRecord> passes_;
  std::chrono::steady_clock::time_point pass_start_{};
};

// "(256 INODE_ITEM 0)": a key as the messages print it (symbolic type, objectid as progs names it).
std::string key_text(const Key& k);

}  // namespace ubtrfs::fsck
