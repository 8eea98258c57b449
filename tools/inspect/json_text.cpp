// JSON payloads as text; see json_text.h.
#include "tools/inspect/json_text.h"

#include <algorithm>
#include <optional>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace ubtrfs::inspect {

namespace {

using Json = nlohmann::ordered_json;  // keeps the daemon's member order

constexpr int kIndent = 2;

bool is_scalar(const Json& j) { return !j.is_object() && !j.is_array(); }

std::string scalar_text(const Json& j) {
  if (j.is_string()) return j.get<std::string>();
  if (j.is_null()) return "-";
  return j.dump();  // numbers in their shortest exact form, true/false
}

bool is_flat_object(const Json& j) {
  return j.is_object() && std::all_of(j.begin(), j.end(), [](const Json& v) { return is_scalar(v); });
}

bool is_scalar_array(const Json& j) {
  return j.is_array() && std::all_of(j.begin(), j.end(), [](const Json& v) { return is_scalar(v); });
}

bool is_table(const Json& j) {
  return j.is_array() && !j.empty() && std::all_of(j.begin(), j.end(), [](const Json& v) { return is_flat_object(v); });
}

void trim_line_end(std::string& out) {
  while (!out.empty() && out.back() == ' ') out.pop_back();
  out.push_back('\n');
}

// Aligned "name  value" lines; numbers right-aligned among themselves.
struct Line {
  std::string name;
  std::string value;
  bool number;
};

void emit_lines(std::string& out, std::vector<Line>& lines, int indent) {
  size_t name_w = 0, num_w = 0;
  for (const auto& l : lines) {
    name_w = std::max(name_w, l.name.size());
    if (l.number) num_w = std::max(num_w, l.value.size());
  }
  for (const auto& l : lines) {
    out.append(indent, ' ');
    out += fmt::format("{:<{}}  ", l.name, name_w);
    out += l.number ? fmt::format("{:>{}}", l.value, num_w) : l.value;
    trim_line_end(out);
  }
  lines.clear();
}

void emit_table(std::string& out, const Json& rows, int indent) {
  std::vector<std::string> columns;
  for (const auto& row : rows)
    for (const auto& [k, v] : row.items())
      if (std::find(columns.begin(), columns.end(), k) == columns.end()) columns.push_back(k);
  std::vector<size_t> width(columns.size());
  std::vector<bool> numeric(columns.size(), true);
  for (size_t c = 0; c < columns.size(); ++c) {
    width[c] = columns[c].size();
    for (const auto& row : rows) {
      auto it = row.find(columns[c]);
      if (it == row.end()) continue;
      width[c] = std::max(width[c], scalar_text(*it).size());
      if (!it->is_number()) numeric[c] = false;
    }
  }
  auto cell = [&](size_t c, const std::string& text) {
    return numeric[c] ? fmt::format("{:>{}}", text, width[c]) : fmt::format("{:<{}}", text, width[c]);
  };
  out.append(indent, ' ');
  for (size_t c = 0; c < columns.size(); ++c) out += (c ? "  " : "") + cell(c, columns[c]);
  trim_line_end(out);
  for (const auto& row : rows) {
    out.append(indent, ' ');
    for (size_t c = 0; c < columns.size(); ++c) {
      auto it = row.find(columns[c]);
      out += (c ? "  " : "") + cell(c, it == row.end() ? "-" : scalar_text(*it));
    }
    trim_line_end(out);
  }
}

void emit_object(std::string& out, const Json& obj, int indent);

// A value that is not a run of scalar lines, under the heading `name`.
void emit_section(std::string& out, const std::string& name, const Json& v, int indent) {
  if (v.is_object()) {
    out.append(indent, ' ');
    out += name + ":";
    if (v.empty()) out += "  (none)";
    out += '\n';
    emit_object(out, v, indent + kIndent);
  } else if (is_table(v)) {
    out.append(indent, ' ');
    out += name + ":\n";
    emit_table(out, v, indent + kIndent);
  } else {  // an array holding objects or arrays
    for (size_t i = 0; i < v.size(); ++i) {
      const std::string item = fmt::format("{}[{}]", name, i);
      if (is_scalar(v[i])) {
        std::vector<Line> one{{item, scalar_text(v[i]), v[i].is_number()}};
        emit_lines(out, one, indent);
      } else {
        emit_section(out, item, v[i], indent);
      }
    }
  }
}

void emit_object(std::string& out, const Json& obj, int indent) {
  std::vector<Line> run;
  for (const auto& [k, v] : obj.items()) {
    if (is_scalar(v)) {
      run.push_back({k, scalar_text(v), v.is_number()});
    } else if (is_scalar_array(v)) {
      std::string joined;
      for (const auto& e : v) joined += (joined.empty() ? "" : ", ") + scalar_text(e);
      run.push_back({k, v.empty() ? "(none)" : joined, false});
    } else {
      emit_lines(out, run, indent);
      emit_section(out, k, v, indent);
    }
  }
  emit_lines(out, run, indent);
}

Result<Json> parse(std::string_view text) {
  Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return fail(EPROTO, "the daemon's reply is not JSON ({} bytes)", text.size());
  return j;
}

int level_rank(const std::string& level) {
  if (level == "critical") return static_cast<int>(LogLevel::kCritical);
  if (level == "error") return static_cast<int>(LogLevel::kError);
  if (level == "warning") return static_cast<int>(LogLevel::kWarning);
  return static_cast<int>(LogLevel::kInfo);
}

std::string member_text(const Json& record, const char* key) {
  auto it = record.find(key);
  return it == record.end() ? std::string("-") : scalar_text(*it);
}

// The log payload with the records below `min` removed. Errors: EPROTO for another shape.
Result<Json> filtered_log(std::string_view text, LogLevel min) {
  Json j = UBTRFS_TRY(parse(text));
  if (!j.is_object() || !j.contains("records") || !j["records"].is_array())
    return fail(EPROTO, "the daemon's log has no \"records\" array");
  Json kept = Json::array();
  for (const auto& r : j["records"]) {
    if (!r.is_object()) return fail(EPROTO, "the daemon's log holds a record that is not an object");
    if (level_rank(member_text(r, "level")) >= static_cast<int>(min)) kept.push_back(r);
  }
  j["records"] = std::move(kept);
  return j;
}

}  // namespace

Result<std::string> json_text(std::string_view json) {
  const Json j = UBTRFS_TRY(parse(json));
  std::string out;
  if (j.is_object()) {
    emit_object(out, j, 0);
  } else if (is_scalar(j)) {
    out = scalar_text(j) + "\n";
  } else if (is_table(j)) {
    emit_table(out, j, 0);
  } else {
    emit_section(out, "", j, 0);
  }
  return out;
}

std::optional<LogLevel> parse_log_level(std::string_view name) {
  if (name == "info") return LogLevel::kInfo;
  if (name == "warn" || name == "warning") return LogLevel::kWarning;
  if (name == "error" || name == "err") return LogLevel::kError;
  if (name == "critical") return LogLevel::kCritical;
  return std::nullopt;
}

Result<std::string> log_text(std::string_view json, LogLevel min) {
  const Json j = UBTRFS_TRY(filtered_log(json, min));
  std::string out;
  if (auto d = j.find("dropped"); d != j.end() && d->is_number_unsigned() && d->get<uint64_t>() > 0)
    out += fmt::format("({} older records were dropped: the daemon keeps the last {})\n", d->get<uint64_t>(),
                       member_text(j, "capacity"));
  for (const auto& r : j["records"])
    out += fmt::format("{}  {:<8}  {}\n", member_text(r, "time"), member_text(r, "level"), member_text(r, "message"));
  return out;
}

Result<std::string> log_json(std::string_view json, LogLevel min) {
  const Json j = UBTRFS_TRY(filtered_log(json, min));
  return j.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n";
}

}  // namespace ubtrfs::inspect
