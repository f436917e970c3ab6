// The ckpt command line (inspect, verify, convert, export) and how it meets bad input: usage
// errors name the argument, broken checkpoints are refused with the file and what is wrong, and a
// failed command removes only what it created.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "tests/run_cli.h"
#include "tests/run_files.h"
#include "tests/trainer/ckpt_test_util.h"
#include "trainer/checkpoint/manifest.h"
#include "trainer/train.h"

using namespace shoestring;
using namespace shoestring::ckpt_test;

// ckpt's usage errors are one line naming the bad argument (they printed the 9-line usage naming
// nothing), and --help after an action is help, not a checkpoint directory named --help.
TEST(Checkpoint, CkptUsageErrorsNameTheArgumentAndHelpIsHelp) {
  using shoestring::testing::run_shoestring;
  for (const char* args : {"inspect --help", "verify --help", "convert some/dir --help", "export -h"}) {
    const auto r = run_shoestring(std::string("ckpt ") + args);
    EXPECT_EQ(r.code, 0) << args << ": " << r.output;
    EXPECT_EQ(r.output.rfind("usage: shoestring ckpt inspect DIR", 0), 0u) << args << ": " << r.output;
  }
  const std::pair<const char*, const char*> cases[] = {
      {"ckpt inspect some/dir extra", "shoestring ckpt inspect: unexpected argument 'extra' (see shoestring ckpt --help)"},
      {"ckpt verify a b", "shoestring ckpt verify: unexpected argument 'b'"},
      {"ckpt frob x", "shoestring ckpt: unknown action 'frob' (inspect, verify, convert, export; see --help)"},
      {"ckpt inspect", "shoestring ckpt inspect: needs a checkpoint directory DIR"},
      {"ckpt convert some/dir --out", "shoestring ckpt convert: --out needs a value"},
      {"ckpt export some/dir --out --force", "shoestring ckpt export: --out needs a value"},
      {"ckpt verify some/dir --checksums", "shoestring ckpt verify: unexpected argument '--checksums'"},
  };
  for (const auto& [args, message] : cases) {
    const auto r = run_shoestring(args);
    EXPECT_EQ(r.code, 2) << args << ": " << r.output;
    EXPECT_TRUE(one_line(r.output) && r.output.find(message) != std::string::npos) << args << ": " << r.output;
  }
}

// A manifest.json that is a directory failed inside libstdc++ ("basic_filebuf::underflow error
// reading the file: Is a directory", exit 1, no path) on every command that reads checkpoints.
TEST(Checkpoint, AManifestThatIsADirectoryIsACheckpointErrorNamingIt) {
  using shoestring::testing::run_shoestring;
  const fs::path a = fresh_dir("manifest_dir"), out = fresh_dir("manifest_dir_out");
  train(tiny_moe(a, 2, 2), parallel::World{});
  const std::string ck = ckpt_dir(a, 2);
  fs::remove(ck + "/manifest.json");
  fs::create_directories(ck + "/manifest.json/inside");
  std::string train_args = "train --config configs/tiny-moe.yaml";
  for (const auto& kv : tiny_moe_sets(a / "again", 4, 0)) train_args += " --set " + kv;
  for (const std::string& args : {"ckpt inspect " + ck, "ckpt verify " + ck, "ckpt convert " + ck + " --out " + out.string(),
                                  "ckpt export " + ck + " --format safetensors --out " + out.string(),
                                  train_args + " --resume " + ck}) {
    const auto r = run_shoestring(args);
    EXPECT_EQ(r.code, 2) << args << ": " << r.output;
    EXPECT_TRUE(one_line(r.output) &&
                r.output.find("checkpoint error: " + ck + "/manifest.json: is a directory, expected a file") != std::string::npos)
        << args << ": " << r.output;
  }
  EXPECT_FALSE(fs::exists(out));
  EXPECT_FALSE(fs::exists(a / "again")) << "train --resume refused the checkpoint after creating its run directory";
  EXPECT_TRUE(fs::is_directory(ck + "/manifest.json/inside"));
  for (const auto& d : {a, out}) fs::remove_all(d);
}

// A mistyped --resume is refused before anything is created: it used to leave an empty run
// directory (log.run_dir) behind, which the next, corrected command then had to work around.
TEST(Checkpoint, AResumeFromAMissingDirectoryCreatesNothing) {
  using shoestring::testing::run_shoestring;
  const fs::path run = fresh_dir("resume_missing"), missing = fresh_dir("resume_missing_ckpt");
  std::string args = "train --config configs/tiny-moe.yaml";
  for (const auto& kv : tiny_moe_sets(run, 2, 0)) args += " --set " + kv;
  const auto r = run_shoestring(args + " --resume " + missing.string());
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_TRUE(one_line(r.output) &&
              r.output.find("checkpoint error: " + missing.string() + ": no such checkpoint directory") != std::string::npos)
      << r.output;
  EXPECT_FALSE(fs::exists(run));
}

// verify checks what the loaders rely on: every dataset the manifest names exists with its length
// and dtype (a manifest is not checksummed), and the embedded config is a valid config. Before,
// all of these said "ok" and export or convert failed afterwards. Manifest problems name the file.
TEST(Checkpoint, VerifyFindsWhatTheLoadersWouldMeet) {
  using shoestring::testing::run_shoestring;
  const fs::path a = fresh_dir("verify_loaders"), out = fresh_dir("verify_loaders_out");
  train(tiny_moe(a, 2, 2), parallel::World{});
  const std::string ck = ckpt_dir(a, 2);
  EXPECT_TRUE(ckpt::verify(ck).empty());
  struct Case {
    const char* name;
    std::string from, to, expected;
  };
  const Case cases[] = {
      {"no_dataset", R"("dataset": "d0")", R"("dataset": "d99")", "/rank_00000.h5: dataset d99 (a piece of param/"},
      {"dtype", R"("dtype": "float32")", R"("dtype": "float64")",
       "/rank_00000.h5: dataset d0 (a piece of param/tok_embed): not 1-D float64 with 2048 elements"},
      {"yaml", R"("config": ")", R"("config": "model: [\n)", "/manifest.json: the embedded config is not valid YAML"},
      {"config", "d_model: 32", "d_model: -32", "/manifest.json (config):"},
      {"float17", R"("dtype": "float32")", R"("dtype": "float17")", "/manifest.json: tensor param/tok_embed: unknown dtype float17"},
      {"cover", R"("shape": [64, 32])", R"("shape": [64, 33])",
       "/manifest.json: tensor param/tok_embed: its pieces do not cover its 2112 elements exactly once"},
  };
  for (const Case& c : cases) {
    const std::string bad = edited_copy(ck, a / c.name, c.from, c.to);
    const auto r = run_shoestring("ckpt verify " + bad);
    EXPECT_EQ(r.code, 1) << c.name << ": " << r.output;
    EXPECT_NE(r.output.find(bad + c.expected), std::string::npos) << c.name << ": " << r.output;
    EXPECT_EQ(r.output.find(": ok"), std::string::npos) << c.name << ": " << r.output;
    // export, which read the missing dataset halfway through its file, now stops before writing.
    const auto e = run_shoestring("ckpt export " + bad + " --format safetensors --out " + out.string());
    EXPECT_EQ(e.code, 2) << c.name << ": " << e.output;
    EXPECT_TRUE(one_line(e.output)) << c.name << ": " << e.output;
    EXPECT_FALSE(fs::exists(out)) << c.name;
  }
  for (const auto& d : {a, out}) fs::remove_all(d);
}

// A failed convert removes what it created: ROOT when it did not exist (it was left empty), else
// only the target; never what was there before.
TEST(Checkpoint, AFailedConvertRemovesOnlyWhatItCreated) {
  using shoestring::testing::run_shoestring;
  const fs::path a = fresh_dir("convert_fail");
  train(tiny_moe(a, 2, 2), parallel::World{});
  const std::string ck = ckpt_dir(a, 2);
  const fs::path fresh = a / "new" / "root", existing = a / "existing";
  fs::create_directories(existing);
  std::ofstream(existing / "keep") << "mine";
  for (const fs::path& root : {fresh, existing}) {
    const auto r = run_shoestring("ckpt convert " + ck + " --out " + root.string() + " --set model.d_model=48");
    EXPECT_EQ(r.code, 2) << r.output;
    EXPECT_TRUE(one_line(r.output) && r.output.find("tensor param/tok_embed has shape") != std::string::npos) << r.output;
  }
  EXPECT_FALSE(fs::exists(a / "new"));
  EXPECT_EQ(shoestring::testing::read_file(existing / "keep"), "mine");
  EXPECT_EQ(std::distance(fs::directory_iterator(existing), fs::directory_iterator()), 1);
  // A corrupt checkpoint, found by the verification inside the conversion.
  fs::resize_file(ck + "/rank_00000.h5", fs::file_size(ck + "/rank_00000.h5") - 1);
  const auto r = run_shoestring("ckpt convert " + ck + " --out " + fresh.string());
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_TRUE(one_line(r.output) && r.output.find("rank_00000.h5") != std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(a / "new"));
  fs::remove_all(a);
}
