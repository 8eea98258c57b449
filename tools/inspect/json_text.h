// Text for people from the JSON a ubtrfs daemon sends (`ubtrfs-inspect stats|log` without
// --json). The stats schema belongs to fs/ and grows, so nothing here knows a field name: the
// layout follows the shape of the value alone —
//   a run of scalar members          aligned "name  value" lines (numbers right-aligned);
//   a nested object                  "name:" and its members indented by two spaces;
//   an array of flat objects         "name:" and a table: one column per key (in first-seen
//                                    order), a header row, "-" where an object lacks the key;
//   an array of scalars              "name  a, b, c";
//   anything else in an array        "name[i]:" sections.
// The log payload (tools/daemon/log_ring.h) is shown as one line per record,
// "TIME  LEVEL     message", oldest first, after a note when older records were dropped.
// Errors: EPROTO when the payload is not JSON of the expected shape (the message says where).
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "io/status.h"

namespace ubtrfs::inspect {

[[nodiscard]] Result<std::string> json_text(std::string_view json);

// Severity threshold of `ubtrfs-inspect log --level`.
enum class LogLevel { kInfo = 0, kWarning = 1, kError = 2, kCritical = 3 };
// "info", "warn"/"warning", "error"/"err", "critical"; nullopt otherwise.
std::optional<LogLevel> parse_log_level(std::string_view name);

// The log payload's records at `min` or above as text (see above).
[[nodiscard]] Result<std::string> log_text(std::string_view json, LogLevel min);
// The log payload with only the records at `min` or above, same schema, as JSON.
[[nodiscard]] Result<std::string> log_json(std::string_view json, LogLevel min);

}  // namespace ubtrfs::inspect
