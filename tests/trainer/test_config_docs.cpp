// docs/configuration.md must describe exactly the keys the code has, with the same type and
// default, so the documentation cannot drift from the structs.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <regex>
#include <set>

#include "trainer/config_schema.h"

namespace {

struct DocRow {
  std::string type, default_value;
};

std::map<std::string, DocRow> documented_keys() {
  std::ifstream in(SHOESTRING_SOURCE_DIR "/docs/configuration.md");
  EXPECT_TRUE(in) << "docs/configuration.md is missing";
  // | `section.key` | type (choices) | `default` | meaning |
  const std::regex row(R"(^\|\s*`([a-z_]+\.[a-z_0-9]+)`\s*\|\s*([^|]+?)\s*\|\s*`([^`]*)`\s*\|)");
  std::map<std::string, DocRow> rows;
  for (std::string line; std::getline(in, line);) {
    std::smatch m;
    if (std::regex_search(line, m, row)) {
      EXPECT_EQ(rows.count(m[1]), 0u) << "documented twice: " << m[1];
      rows[m[1]] = {m[2], m[3]};
    }
  }
  return rows;
}

TEST(ConfigDocs, EveryKeyDocumentedWithTypeAndDefault) {
  const auto rows = documented_keys();
  const shoestring::Config defaults;
  for (const auto& f : shoestring::config_schema()) {
    auto it = rows.find(f.path);
    ASSERT_NE(it, rows.end()) << f.path << " is not documented in docs/configuration.md";
    EXPECT_EQ(it->second.type.rfind(shoestring::type_name(f.type), 0), 0u)
        << f.path << ": docs say type '" << it->second.type << "', code says " << shoestring::type_name(f.type);
    EXPECT_EQ(it->second.default_value, shoestring::format_value(f.get(defaults))) << f.path << ": default differs";
    for (const auto& choice : f.choices)
      EXPECT_NE(it->second.type.find(choice), std::string::npos) << f.path << ": docs omit choice " << choice;
  }
}

TEST(ConfigDocs, NoDocumentedKeyIsMissingFromTheCode) {
  for (const auto& [key, row] : documented_keys())
    EXPECT_NE(shoestring::find_field(key), nullptr) << "docs/configuration.md documents " << key << ", which the code lacks";
}

}  // namespace
